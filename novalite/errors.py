"""Domain errors: what the data-access layer and the services raise when a request cannot
be carried out. They know nothing of HTTP; the API maps each kind to its status and its
API's error body (``novalite.api.errors.from_domain``), so the same rule answers the same
way in Nova's, Keystone's and Glance's format.

::

    NovaliteError
     ├── Invalid        the request itself is wrong             → 400
     ├── Forbidden      allowed to ask, not to do this          → 403
     │    └── QuotaExceeded   (Nova's TooManyInstances text)
     ├── NotFound       no such thing, or not visible to you    → 404
     └── Conflict       the thing's state forbids it now        → 409
          └── NoMoreAddresses  the network has no free address
"""

from __future__ import annotations

from typing import Any


class NovaliteError(Exception):
    """Base of the domain errors; ``str(err)`` is the message shown to the user."""


class Invalid(NovaliteError):
    """The request is malformed or names something unusable."""


class Forbidden(NovaliteError):
    """The caller may not do this (policy, quota)."""


class NotFound(NovaliteError):
    """The object does not exist, or the caller may not see it (never say which)."""


class Conflict(NovaliteError):
    """The object's current state does not allow the operation."""


class QuotaExceeded(Forbidden):
    """Creating would exceed a quota: Nova's TooManyInstances message.

    ``resource``/``requested``/``used``/``allowed`` are single values, or lists of
    equal length when several resources are over at once.
    """

    def __init__(self, resource: Any, requested: Any, used: Any, allowed: Any) -> None:
        def join(value: Any) -> str:
            return ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)

        self.resource, self.requested, self.used, self.allowed = resource, requested, used, allowed
        overs = join(resource)
        super().__init__(
            f"Quota exceeded for {overs}: Requested {join(requested)}, but already used "
            f"{join(used)} of {join(allowed)} {overs}"
        )


class NoMoreAddresses(Conflict):
    """The guest network has no free fixed IP left."""
