"""``/v2.0/quotas``: the network resources' limits per project (Neutron's defaults), admin-set."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import context, json_response, runtime
from novalite.api.network.common import NeutronApiError, bad, resource_body
from novalite.store import networks as store

routes = web.RouteTableDef()


def _readable(request: web.Request, project_id: str) -> None:
    """A project reads its own quotas; an admin any. Others': 403, as Neutron's policy answers."""
    ctx = context(request)
    if not ctx.is_admin and project_id != ctx.project_id:
        raise NeutronApiError("(rule:get_quota) is disallowed by policy", 403, "PolicyNotAuthorized")


def _admin(request: web.Request) -> None:
    if not context(request).is_admin:
        raise NeutronApiError("(rule:update_quota) is disallowed by policy", 403, "PolicyNotAuthorized")


@routes.get("/v2.0/quotas")
async def list_quotas(request: web.Request) -> web.Response:
    _admin(request)
    async with runtime(request).db.connect() as conn:
        found = []
        for project_id in await store.projects_with_quotas(conn):
            found.append(
                {**await store.project_quotas(conn, project_id), "project_id": project_id, "tenant_id": project_id}
            )
    return json_response({"quotas": found})


@routes.get("/v2.0/quotas/{project_id}")
async def show_quota(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    _readable(request, project_id)
    async with runtime(request).db.connect() as conn:
        return json_response({"quota": await store.project_quotas(conn, project_id)})


@routes.get("/v2.0/quotas/{project_id}/default")
async def show_default(request: web.Request) -> web.Response:
    _readable(request, request.match_info["project_id"])
    return json_response({"quota": dict(store.DEFAULT_QUOTAS)})


@routes.get("/v2.0/quotas/{project_id}/details")
async def show_details(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    _readable(request, project_id)
    async with runtime(request).db.connect() as conn:
        limits = await store.project_quotas(conn, project_id)
        body: dict[str, Any] = {
            name: {"limit": limit, "used": await store.usage(conn, project_id, name), "reserved": 0}
            for name, limit in limits.items()
        }
    return json_response({"quota": body})


@routes.put("/v2.0/quotas/{project_id}")
async def update_quota(request: web.Request) -> web.Response:
    _admin(request)
    project_id = request.match_info["project_id"]
    body = await resource_body(request, "quota")
    limits: dict[str, int] = {}
    for name, value in body.items():
        if name == "check_limit":  # Neutron's quota-check-limit: the limits are checked as set anyway
            continue
        if name not in store.DEFAULT_QUOTAS:
            raise bad(f"Unrecognized attribute(s) '{name}'")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise bad(f"Invalid input for {name}. Reason: '{value}' is not an integer.") from None
        if number < -1 or isinstance(value, bool):
            raise bad(f"Invalid input for {name}. Reason: '{value}' should be greater than or equal to -1.")
        limits[name] = number
    async with runtime(request).db.begin() as conn:
        await store.set_quotas(conn, project_id, limits)
        return json_response({"quota": await store.project_quotas(conn, project_id)})


@routes.delete("/v2.0/quotas/{project_id}")
async def reset_quota(request: web.Request) -> web.Response:
    _admin(request)
    async with runtime(request).db.begin() as conn:
        await store.reset_quotas(conn, request.match_info["project_id"])
    return web.Response(status=204)
