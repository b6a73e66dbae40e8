"""``/os-quota-sets``: a project's quotas, its defaults, usage detail; admins change and reset them.

Fields per microversion as Nova: 2.36 drops fixed/floating IPs and security groups,
2.57 drops the file-injection quotas. Non-admins may read their own project's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.compute.common import require_admin
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Forbidden
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import boolean, to_bool, validate
from novalite.context import RequestContext
from novalite.store.identity import get_project
from novalite.store.quotas import (
    REMOVED_2_36,
    REMOVED_2_57,
    RESOURCES,
    default_limits,
    limits_for,
    reset_limits,
    set_limits,
    usage_for,
)

routes = web.RouteTableDef()
QUOTA_SETS = "/v2.1/os-quota-sets/{project_id}"

#: The largest limit: the database's INT, as Nova's db.MAX_INT.
MAX_QUOTA = 0x7FFFFFFF
_quota = {"type": ["integer", "string"], "pattern": "^-?[0-9]+$", "minimum": -1, "maximum": MAX_QUOTA}


def _removed(request: web.Request) -> tuple[str, ...]:
    mv = microversion(request)
    if mv.at_least("2.57"):
        return REMOVED_2_57
    if mv.at_least("2.36"):
        return REMOVED_2_36
    return ()


def _update_schema(removed: tuple[str, ...]) -> dict[str, Any]:
    props: dict[str, Any] = {r: _quota for r in RESOURCES if r not in removed}
    props["force"] = boolean
    return {
        "type": "object",
        "properties": {"quota_set": {"type": "object", "properties": props, "additionalProperties": False}},
        "required": ["quota_set"],
        "additionalProperties": False,
    }


UPDATE: dict[tuple[str, ...], dict[str, Any]] = {
    removed: _update_schema(removed) for removed in ((), REMOVED_2_36, REMOVED_2_57)
}


def _quota_set(project_id: str | None, values: dict[str, Any], removed: tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {"id": project_id} if project_id else {}
    body.update({r: values[r] for r in RESOURCES if r not in removed})
    return {"quota_set": body}


def _require_project(project: object | None, project_id: str) -> None:
    """Nova asks Keystone whether the project exists; 400 when it does not (``project`` is the row or None)."""
    if project is None:
        raise BadRequest(f"Project ID {project_id} is not a valid project.")


def _may_read(ctx: RequestContext, project_id: str, action: str) -> None:
    if project_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow os_compute_api:os-quota-sets:{action} to be performed.")


@routes.get(QUOTA_SETS)
async def show_quotas(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    _may_read(context(request), project_id, "show")
    rt = runtime(request)
    async with rt.db.connect() as conn:
        _require_project(await get_project(conn, project_id), project_id)
        limits = await limits_for(conn, rt.settings, project_id)
    return json_response(_quota_set(project_id, limits, _removed(request)))


@routes.get(QUOTA_SETS + "/defaults")
async def show_default_quotas(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    async with runtime(request).db.connect() as conn:
        _require_project(await get_project(conn, project_id), project_id)
    return json_response(_quota_set(project_id, default_limits(runtime(request).settings), _removed(request)))


@routes.get(QUOTA_SETS + "/detail")
async def show_quota_detail(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    _may_read(context(request), project_id, "detail")
    rt = runtime(request)
    async with rt.db.connect() as conn:
        _require_project(await get_project(conn, project_id), project_id)
        limits = await limits_for(conn, rt.settings, project_id)
        usage = await usage_for(conn, project_id)
    detail = {r: {"in_use": usage.get(r, 0), "limit": limits[r], "reserved": 0} for r in RESOURCES}
    return json_response(_quota_set(project_id, detail, _removed(request)))


def _limit(resource: str, value: int | str) -> int:
    """A limit as an int in -1..MAX_QUOTA, else Nova's 400: the schema's range does not apply to
    digit strings, which the database cannot store past 64 bits (``int()`` refuses past 4300 digits)."""
    text = str(value)
    if len(text.lstrip("-").lstrip("0")) > len(str(MAX_QUOTA)) or not -1 <= int(text) <= MAX_QUOTA:
        shown = text if len(text) <= 30 else text[:30] + "..."
        raise BadRequest(f"Quota limit {shown} for {resource} must be in the range of -1 and {MAX_QUOTA}.")
    return int(text)


@routes.put(QUOTA_SETS)
async def update_quotas(request: web.Request) -> web.Response:
    ctx = context(request)
    project_id = request.match_info["project_id"]
    require_admin(ctx, "os_compute_api:os-quota-sets:update")
    removed = _removed(request)
    body = validate(await read_json(request), UPDATE[removed])["quota_set"]
    force = to_bool(body.get("force", False))
    rt = runtime(request)
    async with rt.db.begin() as conn:
        _require_project(await get_project(conn, project_id), project_id)
        usage = await usage_for(conn, project_id)
        wanted: dict[str, int] = {}
        for key, value in body.items():
            if key == "force" or (not value and value != 0):
                continue
            value = _limit(key, value)
            if not force and value != -1 and value < usage.get(key, 0):
                raise BadRequest(
                    f"Quota limit {value} for {key} must be greater than or equal to already used and "
                    f"reserved {usage.get(key, 0)}."
                )
            wanted[key] = value
        await set_limits(conn, project_id, wanted)
        limits = await limits_for(conn, rt.settings, project_id)
    return json_response(_quota_set(None, limits, removed))


@routes.delete(QUOTA_SETS)
async def reset_quotas(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-quota-sets:delete")
    async with runtime(request).db.begin() as conn:
        await reset_limits(conn, request.match_info["project_id"])
    return web.Response(status=202)
