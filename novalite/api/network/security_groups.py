"""``/v2.0/security-groups`` and ``/v2.0/security-group-rules``.

A project's ``default`` group (all egress; ingress from members of the group) is created
the first time the project uses security groups: listing them, creating one, or a port.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import context, runtime
from novalite.api.network.common import list_response, owner, resource_body, show_response, stamps
from novalite.relay import cast_after_commit
from novalite.store import Connection, server_ports
from novalite.store import networks as store

routes = web.RouteTableDef()


def rule_view(row: Any, defaults: set[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "security_group_id": row.security_group_id,
        "direction": row.direction,
        "ethertype": row.ethertype,
        "protocol": row.protocol,
        "port_range_min": row.port_range_min,
        "port_range_max": row.port_range_max,
        "remote_ip_prefix": row.remote_ip_prefix,
        "remote_group_id": row.remote_group_id,
        "remote_address_group_id": None,
        "normalized_cidr": row.remote_ip_prefix,
        "belongs_to_default_sg": row.security_group_id in defaults,
        "description": row.description,
        **owner(row.project_id),
        **stamps(row),
    }


def group_view(row: Any, rules: list[Any], defaults: set[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        **owner(row.project_id),
        "stateful": row.stateful,
        "shared": False,
        "security_group_rules": [rule_view(r, defaults) for r in rules],
        "tags": list(row.tags or []),
        **stamps(row),
    }


async def _group(request: web.Request, group_id: str) -> dict[str, Any]:
    async with runtime(request).db.connect() as conn:
        row = await store.get_security_group(conn, context(request), group_id)
        rules = await store.rules_of(conn, [group_id])
        defaults = await store.default_group_ids(conn)
    return group_view(row, rules[group_id], defaults)


async def _ensure_default(request: web.Request) -> None:
    ctx = context(request)
    async with runtime(request).db.begin() as conn:
        await store.default_security_group(conn, str(ctx.project_id))


@routes.get("/v2.0/security-groups")
async def list_groups(request: web.Request) -> web.Response:
    await _ensure_default(request)
    async with runtime(request).db.connect() as conn:
        rows = await store.list_security_groups(conn, context(request))
        rules = await store.rules_of(conn, [r.id for r in rows])
        defaults = await store.default_group_ids(conn)
    return list_response(request, "security_groups", [group_view(r, rules[r.id], defaults) for r in rows])


@routes.post("/v2.0/security-groups")
async def create_group(request: web.Request) -> web.Response:
    body = await resource_body(request, "security_group")
    async with runtime(request).db.begin() as conn:
        group_id = await store.create_security_group(conn, context(request), body, quota=None)
    return show_response(request, "security_group", await _group(request, group_id), 201)


@routes.get("/v2.0/security-groups/{group_id}")
async def show_group(request: web.Request) -> web.Response:
    await _ensure_default(request)
    return show_response(request, "security_group", await _group(request, request.match_info["group_id"]))


@routes.put("/v2.0/security-groups/{group_id}")
async def update_group(request: web.Request) -> web.Response:
    body = await resource_body(request, "security_group")
    group_id = request.match_info["group_id"]
    async with runtime(request).db.begin() as conn:
        await store.update_security_group(conn, context(request), group_id, body)
    return show_response(request, "security_group", await _group(request, group_id))


@routes.delete("/v2.0/security-groups/{group_id}")
async def delete_group(request: web.Request) -> web.Response:
    async with runtime(request).db.begin() as conn:
        await store.delete_security_group(conn, context(request), request.match_info["group_id"])
    return web.Response(status=204)


async def _rule(request: web.Request, rule_id: str) -> dict[str, Any]:
    async with runtime(request).db.connect() as conn:
        row = await store.get_security_group_rule(conn, context(request), rule_id)
        defaults = await store.default_group_ids(conn)
    return rule_view(row, defaults)


@routes.get("/v2.0/security-group-rules")
async def list_rules(request: web.Request) -> web.Response:
    await _ensure_default(request)
    async with runtime(request).db.connect() as conn:
        rows = await store.list_security_group_rules(conn, context(request))
        defaults = await store.default_group_ids(conn)
    return list_response(request, "security_group_rules", [rule_view(r, defaults) for r in rows])


@routes.post("/v2.0/security-group-rules")
async def create_rule(request: web.Request) -> web.Response:
    body = await resource_body(request, "security_group_rule")
    async with runtime(request).db.begin() as conn:
        rule_id = await store.create_security_group_rule(conn, context(request), body, quota=None)
        await _refresh_guests(request, conn, body["security_group_id"])
    return show_response(request, "security_group_rule", await _rule(request, rule_id), 201)


@routes.get("/v2.0/security-group-rules/{rule_id}")
async def show_rule(request: web.Request) -> web.Response:
    return show_response(request, "security_group_rule", await _rule(request, request.match_info["rule_id"]))


@routes.delete("/v2.0/security-group-rules/{rule_id}")
async def delete_rule(request: web.Request) -> web.Response:
    async with runtime(request).db.begin() as conn:
        rule = await store.get_security_group_rule(conn, context(request), request.match_info["rule_id"])
        await store.delete_security_group_rule(conn, context(request), request.match_info["rule_id"])
        await _refresh_guests(request, conn, rule.security_group_id)
    return web.Response(status=204)


async def _refresh_guests(request: web.Request, conn: Connection, group_id: str) -> None:
    """The group's rules changed: the running guests of its ports get them (issue 12, outbox)."""
    for topic, args in await server_ports.port_security_updates(conn, group_ids={group_id}):
        await cast_after_commit(conn, context(request), topic, "update_port_security", **args)
