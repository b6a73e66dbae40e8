"""Compute API microversions: negotiation, and the version each handler sees.

A request asks with ``OpenStack-API-Version: compute X.Y`` (or the legacy
``X-OpenStack-Nova-API-Version: X.Y``); no header means the minimum, ``latest`` the
maximum. The chosen version is echoed on every compute response with ``Vary``, as Nova
does, and handlers compare with :meth:`Microversion.at_least`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from novalite.api.errors import ApiError, BadRequest

MIN_VERSION = (2, 1)
#: The newest microversion novalite implements. Every response shape up to it follows
#: Nova's API reference; docs/api.md lists what is supported at which version.
MAX_VERSION = (2, 100)

_FORMAT = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


@dataclass(frozen=True, order=True)
class Microversion:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, version: str) -> bool:
        return (self.major, self.minor) >= _parse(version)

    def below(self, version: str) -> bool:
        return not self.at_least(version)


@functools.cache
def _parse(version: str) -> tuple[int, int]:
    """'2.47' → (2, 47); cached because views ask the same few versions per server."""
    major, minor = version.split(".")
    return int(major), int(minor)


MIN = Microversion(*MIN_VERSION)
MAX = Microversion(*MAX_VERSION)


def requested_version(headers: Mapping[str, str]) -> str | None:
    """The version string the client asked for, or None."""
    get = headers.get
    value = get("OpenStack-API-Version")
    if value:
        for item in value.split(","):
            parts = item.strip().split()
            if len(parts) == 2 and parts[0].lower() == "compute":
                return parts[1]
    legacy = get("X-OpenStack-Nova-API-Version")
    return legacy.strip() if legacy else None


def negotiate(raw: str | None) -> Microversion:
    """Turn the requested version into a Microversion, or raise 400/406 as Nova does."""
    if raw is None:
        return MIN
    if raw.lower() == "latest":
        return MAX
    match = _FORMAT.match(raw.strip())
    if not match:
        raise BadRequest(f"API Version String {raw} is of invalid format. Must be of format MajorNum.MinorNum.")
    version = Microversion(int(match.group(1)), int(match.group(2)))
    if not MIN <= version <= MAX:
        raise ApiError(
            f"Version {version} is not supported by the API. Minimum is {MIN} and maximum is {MAX}.", 406
        )
    return version


def microversion(request: web.Request) -> Microversion:
    """The negotiated microversion of this request."""
    mv: Microversion = request["microversion"]
    return mv


@web.middleware
async def microversion_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Negotiate first (so even errors carry the headers), then echo the version."""
    version = MIN
    try:
        version = negotiate(requested_version(request.headers))
        request["microversion"] = version
        response = await handler(request)
    except ApiError as err:
        err.headers.update(_headers(version))
        raise
    response.headers.update(_headers(version))
    return response


def _headers(version: Microversion) -> dict[str, str]:
    return {
        "OpenStack-API-Version": f"compute {version}",
        "X-OpenStack-Nova-API-Version": str(version),
        "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
    }
