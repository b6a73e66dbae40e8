"""Helpers shared by the compute handlers: policy checks, paging, links."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Forbidden
from novalite.api.http import runtime
from novalite.context import RequestContext

#: Nova's osapi_max_limit: the most items one page returns.
MAX_LIMIT = 1000


def require_admin(ctx: RequestContext, action: str = "this action") -> None:
    if not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow {action} to be performed.")


def require_member(ctx: RequestContext, action: str = "this action") -> None:
    """Changes need member (or manager/admin); readers may only look."""
    if not ctx.can_write:
        raise Forbidden(f"Policy doesn't allow {action} to be performed.")


def compute_base(request: web.Request) -> str:
    """The public URL of the compute API (what links point at); computed once per request,
    because a listing asks for it several times per server."""
    base = request.get("compute_base")
    if base is None:
        base = request["compute_base"] = f"{runtime(request).settings.public_base}/compute"
    return base


def links(request: web.Request, collection: str, ident: Any) -> list[dict[str, str]]:
    """Nova's ``self`` (versioned) and ``bookmark`` (unversioned) links."""
    base = compute_base(request)
    return [
        {"rel": "self", "href": f"{base}/v2.1/{collection}/{ident}"},
        {"rel": "bookmark", "href": f"{base}/{collection}/{ident}"},
    ]


def page_params(request: web.Request) -> tuple[int, str | None]:
    """``limit`` (capped at MAX_LIMIT) and ``marker`` from the query string; 400 if malformed."""
    raw = request.query.get("limit")
    limit = MAX_LIMIT
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest(f"limit param must be an integer, got {raw!r}") from None
        if limit < 0:
            raise BadRequest("limit param must be positive")
        limit = min(limit, MAX_LIMIT)
    return limit, request.query.get("marker")


def next_link(request: web.Request, collection: str, marker: Any, limit: int) -> dict[str, str]:
    query = {k: v for k, v in request.query.items() if k != "marker"}
    query["marker"] = str(marker)
    query.setdefault("limit", str(limit))
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return {"rel": "next", "href": f"{compute_base(request)}/v2.1/{collection}?{qs}"}


def strict_query(request: web.Request, allowed: set[str]) -> None:
    """From 2.75 Nova rejects query parameters it does not know."""
    if microversion(request).below("2.75"):
        return
    extra = sorted(set(request.query) - allowed)
    if extra:
        names = ", ".join(repr(k) for k in extra)
        verb = "was" if len(extra) == 1 else "were"
        raise BadRequest(f"Additional properties are not allowed ({names} {verb} unexpected)")
