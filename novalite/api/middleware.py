"""The middlewares: request ids and the access log, errors in each API's format, token auth."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from novalite.api.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    from_domain,
    keystone_body,
)
from novalite.api.http import Handler, json_response, runtime, too_large
from novalite.context import RequestContext, new_request_id
from novalite.errors import NovaliteError
from novalite.identity import tickets
from novalite.log import bind_request_id, get_logger
from novalite.store.tokens import validate_token

log = get_logger("novalite.api")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_request_id()
    request["request_id"] = request_id
    started = time.perf_counter()
    with bind_request_id(request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["x-openstack-request-id"] = request_id
        if request.path.startswith("/compute"):
            response.headers["X-Compute-Request-Id"] = request_id
        log.info(
            "api.request",
            method=request.method,
            path=request.path_qs,
            status=response.status,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response


def refuse_nul(request: web.Request) -> None:
    """400 for a NUL (``%00``) in the path or the query: PostgreSQL's text cannot hold one, so
    looking the id or filter up would crash (bodies are checked by :func:`~novalite.api.http.loads`)."""
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.query.items()):
        raise BadRequest("The URL holds a NUL character (%00).")


def error_middleware(render: Callable[[ApiError], dict[str, Any]]) -> Any:
    """Render ApiErrors (and aiohttp's own 404/405s, and crashes) in one service's format."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            refuse_nul(request)
            return await handler(request)
        except ApiError as err:
            body = keystone_body(err) if err.status == 401 else render(err)
            headers = err.headers
            if err.status == 401 and "WWW-Authenticate" not in headers:
                # Keystone names itself on every 401, a refused login too (clients follow it).
                uri = f'Keystone uri="{runtime(request).settings.public_base}/identity"'
                headers = {**headers, "WWW-Authenticate": uri}
            return json_response(body, err.status, headers)
        except NovaliteError as exc:
            mapped = from_domain(exc)
            return json_response(render(mapped), mapped.status)
        except web.HTTPNotFound:
            return json_response(render(NotFound("The resource could not be found.")), 404)
        except web.HTTPMethodNotAllowed:
            return json_response(render(MethodNotAllowed("The method is not allowed for this resource.")), 405)
        except web.HTTPRequestEntityTooLarge:
            return json_response(render(too_large()), 413)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("api.unexpected_error", path=request.path)
            crash = ApiError("Unexpected API Error. Please report this at the novalite issue tracker.", 500)
            return json_response(render(crash), 500)

    return middleware


async def authenticate(request: web.Request, *, require_project: bool = True) -> None:
    """Turn ``X-Auth-Token`` into ``request["token"]`` and ``request["context"]``, or raise 401.

    Compute and image need a project-scoped token; identity also accepts unscoped ones.
    """
    token = request.headers.get("X-Auth-Token")
    rt = runtime(request)
    async with rt.db.connect() as conn:
        info = await validate_token(conn, token)
    if info is None or (require_project and not info.project_id):
        raise Unauthorized(
            "The request you have made requires authentication.",
            headers={"WWW-Authenticate": f'Keystone uri="{rt.settings.public_base}/identity"'},
        )
    request["token"] = info
    request["context"] = RequestContext(
        request_id=request["request_id"],
        user_id=info.user_id,
        user_name=info.user_name,
        project_id=info.project_id,
        project_name=info.project_name,
        roles=info.role_names,
        auth_token=token,
    )


#: The one route an image download ticket opens (and only for GET: PUT shares the resource).
IMAGE_TICKET_ROUTE = "/image/v2/images/{image_id}/file"


async def authenticate_image_ticket(request: web.Request) -> None:
    """Turn ``X-Image-Ticket`` into a context of the ticket's project (no user, no roles), or raise 401.

    A compute host downloads a build's image with a ticket instead of the user's token
    (see :mod:`novalite.identity.tickets`); the handler still applies that project's
    visibility of the image, so a ticket never reaches further than the project could.
    """
    rt = runtime(request)
    image_id = request.match_info["image_id"]
    try:
        secret = await tickets.ticket_key(rt)
        project_id = tickets.verify_image_ticket(secret, request.headers[tickets.HEADER], image_id)
    except tickets.ImageTicketError as exc:
        log.warning("api.image_ticket_refused", image_id=image_id, reason=str(exc))
        raise Unauthorized(
            f"The request you have made requires authentication: {exc}.",
            headers={"WWW-Authenticate": f'Keystone uri="{rt.settings.public_base}/identity"'},
        ) from None
    request["context"] = RequestContext(request_id=request["request_id"], project_id=project_id)


async def authenticate_upload_ticket(request: web.Request) -> None:
    """``PUT`` of an image's data with an upload ticket (issue 11: a compute host uploading the
    snapshot it took): a context of the ticket's project, no user, no roles, or 401. The data
    handler then lets it upload to that one image, which must belong to that project."""
    rt = runtime(request)
    image_id = request.match_info["image_id"]
    try:
        secret = await tickets.ticket_key(rt)
        project_id = tickets.verify_upload_ticket(secret, request.headers[tickets.HEADER], image_id)
    except tickets.ImageTicketError as exc:
        log.warning("api.upload_ticket_refused", image_id=image_id, reason=str(exc))
        raise Unauthorized(
            f"The request you have made requires authentication: {exc}.",
            headers={"WWW-Authenticate": f'Keystone uri="{rt.settings.public_base}/identity"'},
        ) from None
    request["context"] = RequestContext(request_id=request["request_id"], project_id=project_id)
    request[tickets.UPLOAD_TICKET_KEY] = image_id


def auth_middleware(public: Iterable[str]) -> Any:
    """Authenticate every request whose route is not in ``public`` (version documents).

    ``GET`` of an image's data also accepts an image ticket instead of a token.
    """
    public_paths = set(public)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rel = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        if (
            rel == IMAGE_TICKET_ROUTE
            and request.method == "GET"
            and tickets.HEADER in request.headers
            and "X-Auth-Token" not in request.headers
        ):
            await authenticate_image_ticket(request)
        elif (
            rel == IMAGE_TICKET_ROUTE
            and request.method == "PUT"
            and tickets.HEADER in request.headers
            and "X-Auth-Token" not in request.headers
        ):
            await authenticate_upload_ticket(request)
        elif rel not in public_paths:
            await authenticate(request)
        return await handler(request)

    return middleware
