"""``/v2.0/subnets``: IPv4 and IPv6 subnets of a network, with pools, DNS servers and host routes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import context, runtime
from novalite.api.network.common import list_response, owner, resource_body, show_response, stamps
from novalite.store import networks as store

routes = web.RouteTableDef()


def subnet_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "network_id": row.network_id,
        **owner(row.project_id),
        "ip_version": row.ip_version,
        "cidr": row.cidr,
        "gateway_ip": row.gateway_ip,
        "allocation_pools": list(row.allocation_pools or []),
        "dns_nameservers": list(row.dns_nameservers or []),
        "host_routes": list(row.host_routes or []),
        "enable_dhcp": row.enable_dhcp,
        "ipv6_ra_mode": row.ipv6_ra_mode,
        "ipv6_address_mode": row.ipv6_address_mode,
        "subnetpool_id": None,
        "service_types": [],
        "dns_publish_fixed_ip": False,
        "tags": list(row.tags or []),
        **stamps(row),
    }


async def _view_one(request: web.Request, subnet_id: str) -> dict[str, Any]:
    async with runtime(request).db.connect() as conn:
        return subnet_view(await store.get_subnet(conn, context(request), subnet_id))


@routes.get("/v2.0/subnets")
async def list_subnets(request: web.Request) -> web.Response:
    async with runtime(request).db.connect() as conn:
        rows = await store.list_subnets(conn, context(request))
    return list_response(request, "subnets", [subnet_view(r) for r in rows])


@routes.post("/v2.0/subnets")
async def create_subnet(request: web.Request) -> web.Response:
    body = await resource_body(request, "subnet")
    async with runtime(request).db.begin() as conn:
        subnet_id = await store.create_subnet(conn, context(request), body, quota=None)
    return show_response(request, "subnet", await _view_one(request, subnet_id), 201)


@routes.get("/v2.0/subnets/{subnet_id}")
async def show_subnet(request: web.Request) -> web.Response:
    return show_response(request, "subnet", await _view_one(request, request.match_info["subnet_id"]))


@routes.put("/v2.0/subnets/{subnet_id}")
async def update_subnet(request: web.Request) -> web.Response:
    body = await resource_body(request, "subnet")
    subnet_id = request.match_info["subnet_id"]
    async with runtime(request).db.begin() as conn:
        await store.update_subnet(conn, context(request), subnet_id, body)
    return show_response(request, "subnet", await _view_one(request, subnet_id))


@routes.delete("/v2.0/subnets/{subnet_id}")
async def delete_subnet(request: web.Request) -> web.Response:
    async with runtime(request).db.begin() as conn:
        await store.delete_subnet(conn, context(request), request.match_info["subnet_id"])
    return web.Response(status=204)
