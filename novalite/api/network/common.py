"""What every network handler shares: Neutron's error body, list conventions, body checks.

Neutron's lists: filter by any attribute (``?name=a&name=b`` is either), ``fields=``,
``sort_key``/``sort_dir`` (repeatable, paired), ``limit``/``marker`` with
``<collection>_links`` (``next``; ``previous`` when a marker was given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from novalite.api.errors import ApiError
from novalite.api.http import Handler, json_response, read_json, runtime
from novalite.errors import NovaliteError
from novalite.store import networks as store
from novalite.timeutil import iso

#: Neutron's exception name for a status without a more specific one.
DEFAULT_TYPES = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    413: "HTTPRequestEntityTooLarge",
    415: "HTTPUnsupportedMediaType",
    500: "HTTPInternalServerError",
}


class NeutronApiError(ApiError):
    """An ApiError that knows Neutron's exception name."""

    def __init__(self, message: str, status: int, type_: str) -> None:
        super().__init__(message, status)
        self.type = type_


def neutron_body(err: ApiError) -> dict[str, Any]:
    """``{"NeutronError": {"type", "message", "detail"}}``."""
    kind = getattr(err, "type", None) or DEFAULT_TYPES.get(err.status, "NeutronError")
    return {"NeutronError": {"type": kind, "message": err.message, "detail": ""}}


STATUS_OF = ((store.BadInput, 400), (store.NotAllowed, 403), (store.NotVisible, 404), (store.InConflict, 409))


@web.middleware
async def network_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the store's NetworkErrors into API errors with their Neutron type (inside error_middleware)."""
    try:
        return await handler(request)
    except store.NetworkError as exc:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 500)
        raise NeutronApiError(str(exc), status, exc.type) from None
    except NovaliteError as exc:
        from novalite.api.errors import from_domain

        mapped = from_domain(exc)
        raise NeutronApiError(str(exc), mapped.status, DEFAULT_TYPES.get(mapped.status, "NeutronError")) from None


WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@web.middleware
async def readers_read(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Neutron's defaults: a project's reader reads, only its members (and admins) change anything."""
    if request.method in WRITES and "context" in request and not request["context"].can_write:
        raise NeutronApiError(
            f"(rule:{request.method.lower()}) is disallowed by policy: the reader role only reads",
            403,
            "PolicyNotAuthorized",
        )
    return await handler(request)


def bad(message: str) -> NeutronApiError:
    return NeutronApiError(message, 400, "HTTPBadRequest")


def v2_base(request: web.Request) -> str:
    return f"{runtime(request).settings.public_base}/network/v2.0"


async def resource_body(request: web.Request, key: str) -> dict[str, Any]:
    """The ``{"<key>": {...}}`` body's inner object, or 400 naming what is wrong."""
    try:
        body = await read_json(request)
    except ApiError as exc:
        raise bad(exc.message) from None
    if not isinstance(body, dict) or key not in body:
        raise bad(f"Resource body required: {{'{key}': ...}} is missing.")
    inner = body[key]
    if not isinstance(inner, dict):
        raise bad(f"Invalid input for {key}. Reason: '{inner}' is not a dictionary.")
    return inner


def stamps(row: Any) -> dict[str, Any]:
    return {
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at or row.created_at),
        "revision_number": row.revision_number,
    }


def owner(project_id: str | None) -> dict[str, Any]:
    """Neutron shows the owner twice: ``project_id`` and the older ``tenant_id``."""
    return {"project_id": project_id or "", "tenant_id": project_id or ""}


# -- lists --------------------------------------------------------------------------------

PAGING = {"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse"}
TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _matches(view: dict[str, Any], key: str, wanted: list[str]) -> bool:
    if key in TAG_FILTERS:
        asked = {t for w in wanted for t in w.split(",") if t}
        have = set(view.get("tags") or [])
        return {
            "tags": asked <= have,
            "tags-any": bool(asked & have),
            "not-tags": not asked <= have,
            "not-tags-any": not asked & have,
        }[key]
    if key not in view:
        return True  # Neutron ignores filters on unknown attributes
    value = view[key]
    if key == "fixed_ips":
        pairs = [w.split("=", 1) for w in wanted if "=" in w]
        return all(any(ip.get(k) == v for ip in value) for k, v in pairs)
    if isinstance(value, list):
        return any(_text(v) in wanted or (isinstance(v, dict) and v.get("id") in wanted) for v in value)
    lowered = {w.lower() for w in wanted} if isinstance(value, bool) else set(wanted)
    return _text(value) in lowered


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def _sorter(key: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    return lambda view: _sort_value(view.get(key))


def list_response(
    request: web.Request, collection: str, views: list[dict[str, Any]], *, keys: list[str] | None = None
) -> web.Response:
    """Filter, sort, page and project ``views`` as Neutron does, and answer ``{collection: [...]}``."""
    q = request.query
    for key in set(q.keys()) - PAGING:
        wanted = q.getall(key)
        views = [v for v in views if _matches(v, key, wanted)]
    sort_keys, sort_dirs = q.getall("sort_key", []), q.getall("sort_dir", [])
    if sort_dirs and len(sort_dirs) != len(sort_keys):
        raise bad("The number of sort_keys and sort_dirs must be same")
    known = set(views[0]) if views else set(keys or [])
    for key in sort_keys:
        if views and key not in known:
            raise bad(f"{key} is invalid attribute for sort_keys")
    for d in sort_dirs:
        if d not in ("asc", "desc"):
            raise bad(f"{d} is invalid value for sort_dirs, valid value is 'asc' and 'desc'")
    for key, direction in reversed(list(zip(sort_keys, sort_dirs or ["asc"] * len(sort_keys), strict=False))):
        views.sort(key=_sorter(key), reverse=direction == "desc")
    links: list[dict[str, str]] = []
    limit_text = q.get("limit")
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            raise bad(f"Invalid input for limit. Reason: '{limit_text}' is not an integer.") from None
        if limit < 0:
            raise bad(f"Limit must be an integer 0 or greater and not '{limit}'")
        views, links = _page(request, collection, views, limit, q.get("marker"))
    fields = [f for value in q.getall("fields", []) for f in value.split(",") if f]
    if fields:
        views = [{k: v for k, v in view.items() if k in fields} for view in views]
    body: dict[str, Any] = {collection: views}
    if links:
        body[f"{collection}_links"] = links
    return json_response(body)


def _page(
    request: web.Request, collection: str, views: list[dict[str, Any]], limit: int, marker: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    start = 0
    if marker:
        ids = [v.get("id") for v in views]
        if marker not in ids:
            raise NeutronApiError(f"Marker {marker} could not be found.", 404, "HTTPNotFound")
        start = ids.index(marker) + 1
    if limit == 0:
        return views[start:], []
    page = views[start : start + limit]
    links: list[dict[str, str]] = []
    base = f"{v2_base(request)}/{collection.replace('_', '-')}"
    kept = [(k, v) for k, v in request.query.items() if k not in ("marker", "page_reverse")]
    if page and start + limit < len(views):
        links.append({"rel": "next", "href": f"{base}?{urlencode([*kept, ('marker', page[-1]['id'])])}"})
    if page and marker:
        prev = [*kept, ("marker", page[0]["id"]), ("page_reverse", "True")]
        links.append({"rel": "previous", "href": f"{base}?{urlencode(prev)}"})
    return page, links


def show_response(request: web.Request, key: str, view: dict[str, Any], status: int = 200) -> web.Response:
    fields = [f for value in request.query.getall("fields", []) for f in value.split(",") if f]
    if fields:
        view = {k: v for k, v in view.items() if k in fields}
    return json_response({key: view}, status)
