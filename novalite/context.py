"""The request context: who asked, and the request id that follows the request everywhere.

A context is created by the API for each request (or by a service for its own periodic
work) and travels inside every bus message as plain JSON, so the conductor, the
scheduler and the compute agent log the same ``request_id`` and act with the same
identity.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


def new_request_id() -> str:
    """A request id in OpenStack's format (``req-<uuid>``)."""
    return f"req-{uuid.uuid4()}"


@dataclass
class RequestContext:
    request_id: str = field(default_factory=new_request_id)
    user_id: str | None = None
    user_name: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    roles: list[str] = field(default_factory=list)
    auth_token: str | None = None
    #: Who sent the bus message this context came with, as the transport vouches for it
    #: (novalite.bus.identity); None in-process. Set by the receiving Bus, never read
    #: from the message itself.
    sender: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def can_write(self) -> bool:
        """Whether the roles allow changes in the project (``member`` and above)."""
        return bool({"admin", "manager", "member"} & set(self.roles))

    def to_dict(self) -> dict[str, Any]:
        """The context as it travels in bus messages: without the user's token.

        A token is the user's whole identity until it expires; bus messages rest in the
        broker (and in the outbox table) and reach compute hosts, so it never goes in them.
        What a host needs on the user's behalf — an image — it gets as a ticket for that
        one image (:mod:`novalite.identity.tickets`).
        """
        data = asdict(self)
        data.pop("auth_token", None)
        data.pop("sender", None)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestContext:
        known = set(cls.__dataclass_fields__) - {"sender"}  # a message cannot name its own sender
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def admin(cls, request_id: str | None = None) -> RequestContext:
        """A context for a service's own work (periodic tasks, start-up)."""
        return cls(request_id=request_id or new_request_id(), user_name="novalite", roles=["admin"])
