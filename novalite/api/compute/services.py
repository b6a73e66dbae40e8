"""Services (admin): list, enable/disable/force-down, delete.

Ids are integers below 2.53 and uuids from 2.53; ``forced_down`` appears at 2.11.
From 2.53 ``PUT /os-services/{uuid}`` takes status/disabled_reason/forced_down; below,
``PUT /os-services/{enable,disable,disable-log-reason,force-down}`` name the service by
host and binary. Only nova-compute services can be updated.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from novalite.api.compute.common import require_admin, strict_query
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Conflict, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import boolean, to_bool, validate
from novalite.db import schema as t
from novalite.servicegroup import is_up
from novalite.timeutil import iso_micro

routes = web.RouteTableDef()
SERVICES = "/v2.1/os-services"
COMPUTE = "nova-compute"
INTERNAL_ZONE = "internal"
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

_reason = {"type": "string", "minLength": 1, "maxLength": 255}
_binary = {"type": "string", "minLength": 1, "maxLength": 255}
_host = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[a-zA-Z0-9-._]*$"}
UPDATE_LEGACY = {
    "type": "object",
    "properties": {"host": _host, "binary": _binary, "disabled_reason": _reason},
    "required": ["host", "binary"],
    "additionalProperties": False,
}
UPDATE_V211 = {
    "type": "object",
    "properties": {"host": _host, "binary": _binary, "disabled_reason": _reason, "forced_down": boolean},
    "required": ["host", "binary"],
    "additionalProperties": False,
}
UPDATE_V253 = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["enabled", "disabled"]},
        "disabled_reason": _reason,
        "forced_down": boolean,
    },
    "additionalProperties": False,
}


def is_uuid(value: str) -> bool:
    return bool(UUID_RE.match(value))


def service_zone(row: Any, default_az: str) -> str:
    """Compute services live in their availability zone; every other service in ``internal``."""
    if row.binary != COMPUTE:
        return INTERNAL_ZONE
    return row.availability_zone or default_az


def service_view(request: web.Request, row: Any) -> dict[str, Any]:
    mv = microversion(request)
    settings = runtime(request).settings
    body = {
        "binary": row.binary,
        "host": row.host,
        "id": row.uuid if mv.at_least("2.53") else row.id,
        "zone": service_zone(row, settings.availability_zone),
        "status": "disabled" if row.disabled else "enabled",
        "state": "up" if is_up(row, settings.service_down_time) else "down",
        "updated_at": iso_micro(row.updated_at),
        "disabled_reason": row.disabled_reason,
    }
    if mv.at_least("2.11"):
        body["forced_down"] = bool(row.forced_down)
    return body


@routes.get(SERVICES)
async def list_services(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-services:list")
    strict_query(request, {"host", "binary"})
    query = sa.select(t.services).order_by(t.services.c.id)
    if request.query.get("host"):
        query = query.where(t.services.c.host == request.query["host"])
    if request.query.get("binary"):
        query = query.where(t.services.c.binary == request.query["binary"])
    async with runtime(request).db.connect() as conn:
        rows = list(await conn.execute(query))
    return json_response({"services": [service_view(request, r) for r in rows]})


async def _by_id(conn: Any, request: web.Request, ident: str) -> Any:
    if microversion(request).at_least("2.53"):
        if not is_uuid(ident):
            raise BadRequest(f"Invalid uuid {ident}")
        where = t.services.c.uuid == ident
    else:
        try:
            where = t.services.c.id == int(ident)
        except ValueError:
            raise BadRequest("Invalid input received: id must be an integer") from None
    row = (await conn.execute(sa.select(t.services).where(where))).first()
    if row is None:
        raise NotFound(f"Service {ident} not found.")
    return row


@routes.put(SERVICES + "/{ident}")
async def update_service(request: web.Request) -> web.Response:
    ident = request.match_info["ident"]
    if microversion(request).at_least("2.53"):
        return await _update_v253(request, ident)
    return await _update_legacy(request, ident)


async def _update_v253(request: web.Request, ident: str) -> web.Response:
    if not is_uuid(ident):
        raise BadRequest(f"Invalid uuid {ident}")
    require_admin(context(request), "os_compute_api:os-services:update")
    body = validate(await read_json(request), UPDATE_V253)
    async with runtime(request).db.begin() as conn:
        row = (await conn.execute(sa.select(t.services).where(t.services.c.uuid == ident))).first()
        if row is None:
            raise NotFound(f"Service {ident} could not be found.")
        if row.binary != COMPUTE:
            raise BadRequest(
                f"Updating a {row.binary} service is not supported. Only nova-compute services can be updated."
            )
        values: dict[str, Any] = {}
        if "status" in body:
            if body["status"] == "enabled":
                if body.get("disabled_reason"):
                    raise BadRequest("Specifying 'disabled_reason' with status 'enabled' is invalid.")
                values.update(disabled=False, disabled_reason=None)
            else:
                values.update(disabled=True, disabled_reason=body.get("disabled_reason"))
        if "forced_down" in body:
            values["forced_down"] = to_bool(body["forced_down"])
        if not values:
            raise BadRequest("No updates were requested. Fields 'status' or 'forced_down' should be specified.")
        await conn.execute(t.services.update().where(t.services.c.id == row.id).values(**values))
        row = (await conn.execute(sa.select(t.services).where(t.services.c.id == row.id))).one()
    return json_response({"service": service_view(request, row)})


async def _update_legacy(request: web.Request, action: str) -> web.Response:
    mv = microversion(request)
    require_admin(context(request), "os_compute_api:os-services:update")
    body = validate(await read_json(request), UPDATE_V211 if mv.at_least("2.11") else UPDATE_LEGACY)
    actions = {"enable", "disable", "disable-log-reason"} | ({"force-down"} if mv.at_least("2.11") else set())
    if action not in actions:
        raise NotFound("Unknown action")
    host, binary = body["host"], body["binary"]
    result: dict[str, Any] = {"host": host, "binary": binary}
    if action == "enable":
        values: dict[str, Any] = {"disabled": False, "disabled_reason": None}
        result["status"] = "enabled"
    elif action == "disable":
        values = {"disabled": True, "disabled_reason": None}
        result["status"] = "disabled"
    elif action == "disable-log-reason":
        if "disabled_reason" not in body:
            raise BadRequest("Missing disabled reason field")
        values = {"disabled": True, "disabled_reason": body["disabled_reason"]}
        result.update(status="disabled", disabled_reason=body["disabled_reason"])
    else:
        if "forced_down" not in body:
            raise BadRequest("Missing forced_down field")
        values = {"forced_down": to_bool(body["forced_down"])}
        result["forced_down"] = values["forced_down"]
    if binary != COMPUTE:
        raise BadRequest(f"Updating a {binary} service is not supported. Only nova-compute services can be updated.")
    async with runtime(request).db.begin() as conn:
        updated = await conn.execute(
            t.services.update().where(t.services.c.host == host, t.services.c.binary == binary).values(**values)
        )
        if not updated.rowcount:
            raise NotFound(f"Host '{host}' is not mapped to any cell")
    return json_response({"service": result})


@routes.delete(SERVICES + "/{ident}")
async def delete_service(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-services:delete")
    ident = request.match_info["ident"]
    async with runtime(request).db.begin() as conn:
        row = await _by_id(conn, request, ident)
        if row.binary == COMPUTE:
            hosting = await conn.scalar(
                sa.select(sa.func.count()).where(t.instances.c.host == row.host, t.instances.c.deleted == sa.false())
            )
            if hosting:
                raise Conflict(
                    "Unable to delete compute service that is hosting instances. Migrate or delete the instances first."
                )
            nodes = [
                r.uuid
                for r in await conn.execute(sa.select(t.compute_nodes.c.uuid).where(t.compute_nodes.c.host == row.host))
            ]
            for node in nodes:
                await conn.execute(t.allocations.delete().where(t.allocations.c.provider_uuid == node))
                await conn.execute(t.inventories.delete().where(t.inventories.c.provider_uuid == node))
                await conn.execute(t.resource_providers.delete().where(t.resource_providers.c.uuid == node))
            await conn.execute(t.compute_nodes.delete().where(t.compute_nodes.c.host == row.host))
        await conn.execute(t.services.delete().where(t.services.c.id == row.id))
    return web.Response(status=204)
