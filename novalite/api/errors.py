"""API errors, raised by handlers and rendered by each service in its own error format.

Nova: ``{"itemNotFound": {"code": 404, "message": "..."}}``;
Keystone: ``{"error": {"code": 401, "message": "...", "title": "Unauthorized"}}``;
Glance: ``{"code": "404 Not Found", "title": "Not Found", "message": "..."}``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from novalite import errors as domain

NOVA_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    500: "computeFault",
    501: "notImplemented",
    503: "serviceUnavailable",
}


class ApiError(Exception):
    """An error answered to the client; ``status`` is the HTTP status."""

    status = 500

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class NotAcceptable(ApiError):
    status = 406


class Conflict(ApiError):
    status = 409


class OverLimit(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class ServiceUnavailable(ApiError):
    status = 503


def nova_body(err: ApiError) -> dict[str, Any]:
    name = NOVA_FAULT_NAMES.get(err.status, "computeFault")
    return {name: {"code": err.status, "message": err.message}}


def keystone_body(err: ApiError) -> dict[str, Any]:
    return {"error": {"code": err.status, "message": err.message, "title": err.title}}


def glance_body(err: ApiError) -> dict[str, Any]:
    return {"code": f"{err.status} {err.title}", "title": err.title, "message": err.message}


#: HTTP status of each kind of domain error (the most specific class listed wins).
DOMAIN_STATUS: tuple[tuple[type[domain.NovaliteError], int], ...] = (
    (domain.Invalid, 400),
    (domain.Forbidden, 403),
    (domain.NotFound, 404),
    (domain.Conflict, 409),
)


def from_domain(err: domain.NovaliteError) -> ApiError:
    """The API error a domain error is answered with (500 for a kind the API does not know)."""
    for kind, status in DOMAIN_STATUS:
        if isinstance(err, kind):
            return ApiError(str(err), status)
    return ApiError(str(err), 500)
