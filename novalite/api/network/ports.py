"""``/v2.0/ports``: fixed IPs taken atomically, MACs, security groups, bindings (admin-only host)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import context, runtime
from novalite.api.network.common import list_response, owner, resource_body, show_response, stamps
from novalite.context import RequestContext
from novalite.relay import cast_after_commit
from novalite.store import Connection, server_ports
from novalite.store import networks as store

routes = web.RouteTableDef()


def port_view(ctx: RequestContext, row: Any, fixed_ips: list[dict[str, str]]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "network_id": row.network_id,
        **owner(row.project_id),
        "mac_address": row.mac,
        "admin_state_up": row.admin_state_up,
        "status": row.status,
        "device_id": row.device_id,
        "device_owner": row.device_owner,
        "fixed_ips": fixed_ips,
        "allowed_address_pairs": list(row.allowed_address_pairs or []),
        "security_groups": list(row.security_groups or []),
        "port_security_enabled": row.port_security_enabled,
        "extra_dhcp_opts": [],
        "binding:vnic_type": "normal",
        "tags": list(row.tags or []),
        **stamps(row),
    }
    if ctx.is_admin:
        host = getattr(row, "instance_host", None) or row.binding_host_id  # a server's port: its host
        view["binding:host_id"] = host
        view["binding:profile"] = {}
        view["binding:vif_details"] = {}
        view["binding:vif_type"] = "bridge" if host else "unbound"
    return view


async def _view_one(request: web.Request, port_id: str) -> dict[str, Any]:
    ctx = context(request)
    async with runtime(request).db.connect() as conn:
        row = await store.get_port(conn, ctx, port_id)
        ips = await store.fixed_ips_of(conn, [port_id])
    return port_view(ctx, row, ips[port_id])


@routes.get("/v2.0/ports")
async def list_ports(request: web.Request) -> web.Response:
    ctx = context(request)
    async with runtime(request).db.connect() as conn:
        rows = await store.list_ports(conn, ctx)
        ips = await store.fixed_ips_of(conn, [r.id for r in rows])
    return list_response(request, "ports", [port_view(ctx, r, ips[r.id]) for r in rows])


@routes.post("/v2.0/ports")
async def create_port(request: web.Request) -> web.Response:
    body = await resource_body(request, "port")
    async with runtime(request).db.begin() as conn:
        port_id = await store.create_port(conn, context(request), body, quota=None)
        await _refresh_guests(request, conn, port_ids={port_id})  # a new member of its groups
    return show_response(request, "port", await _view_one(request, port_id), 201)


@routes.get("/v2.0/ports/{port_id}")
async def show_port(request: web.Request) -> web.Response:
    return show_response(request, "port", await _view_one(request, request.match_info["port_id"]))


@routes.put("/v2.0/ports/{port_id}")
async def update_port(request: web.Request) -> web.Response:
    body = await resource_body(request, "port")
    port_id = request.match_info["port_id"]
    async with runtime(request).db.begin() as conn:
        before = await store.get_port(conn, context(request), port_id)
        await store.update_port(conn, context(request), port_id, body)
        await _refresh_guests(request, conn, port_ids={port_id}, group_ids=set(before.security_groups or []))
    return show_response(request, "port", await _view_one(request, port_id))


@routes.delete("/v2.0/ports/{port_id}")
async def delete_port(request: web.Request) -> web.Response:
    async with runtime(request).db.begin() as conn:
        before = await store.get_port(conn, context(request), request.match_info["port_id"])
        await store.delete_port(conn, context(request), request.match_info["port_id"])
        await _refresh_guests(request, conn, group_ids=set(before.security_groups or []))
    return web.Response(status=204)


async def _refresh_guests(request: web.Request, conn: Connection, **changed: Any) -> None:
    """A port's security or a group's members changed: the running guests whose rules that
    touches get them again (issue 12; ``update_port_security`` casts through the outbox)."""
    for topic, args in await server_ports.port_security_updates(conn, **changed):
        await cast_after_commit(conn, context(request), topic, "update_port_security", **args)
