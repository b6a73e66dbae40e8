"""``/v2.0/networks``: CRUD; provider attributes shown to and set by admins only."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import context, runtime
from novalite.api.network.common import list_response, owner, resource_body, show_response, stamps
from novalite.context import RequestContext
from novalite.store import networks as store

routes = web.RouteTableDef()


def network_view(ctx: RequestContext, row: Any, subnets: list[str]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        **owner(row.project_id),
        "admin_state_up": row.admin_state_up,
        "status": row.status,
        "subnets": subnets,
        "shared": row.shared,
        "mtu": row.mtu,
        "port_security_enabled": row.port_security_enabled,
        "router:external": row.router_external,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
        "l2_adjacency": True,
        "tags": list(row.tags or []),
        **stamps(row),
    }
    if ctx.is_admin:
        view["provider:network_type"] = row.provider_network_type
        view["provider:physical_network"] = row.provider_physical_network
        view["provider:segmentation_id"] = row.provider_segmentation_id
    return view


async def _view_one(request: web.Request, network_id: str) -> dict[str, Any]:
    ctx = context(request)
    async with runtime(request).db.connect() as conn:
        row = await store.get_network(conn, ctx, network_id)
        subnets = await store.subnet_ids_by_network(conn, [network_id])
    return network_view(ctx, row, subnets[network_id])


@routes.get("/v2.0/networks")
async def list_networks(request: web.Request) -> web.Response:
    ctx = context(request)
    async with runtime(request).db.connect() as conn:
        rows = await store.list_networks(conn, ctx)
        subnets = await store.subnet_ids_by_network(conn, [r.id for r in rows])
    return list_response(request, "networks", [network_view(ctx, r, subnets[r.id]) for r in rows])


@routes.post("/v2.0/networks")
async def create_network(request: web.Request) -> web.Response:
    body = await resource_body(request, "network")
    async with runtime(request).db.begin() as conn:
        network_id = await store.create_network(conn, context(request), body, quota=None)
    return show_response(request, "network", await _view_one(request, network_id), 201)


@routes.get("/v2.0/networks/{network_id}")
async def show_network(request: web.Request) -> web.Response:
    return show_response(request, "network", await _view_one(request, request.match_info["network_id"]))


@routes.put("/v2.0/networks/{network_id}")
async def update_network(request: web.Request) -> web.Response:
    body = await resource_body(request, "network")
    network_id = request.match_info["network_id"]
    async with runtime(request).db.begin() as conn:
        await store.update_network(conn, context(request), network_id, body)
    return show_response(request, "network", await _view_one(request, network_id))


@routes.delete("/v2.0/networks/{network_id}")
async def delete_network(request: web.Request) -> web.Response:
    async with runtime(request).db.begin() as conn:
        await store.delete_network(conn, context(request), request.match_info["network_id"])
    return web.Response(status=204)
