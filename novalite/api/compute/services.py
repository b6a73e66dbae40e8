"""Services (admin): list, enable/disable/force-down, delete.

Ids are integers below 2.53 and uuids from 2.53; ``forced_down`` appears at 2.11.
From 2.53 ``PUT /os-services/{uuid}`` takes status/disabled_reason/forced_down; below,
``PUT /os-services/{enable,disable,disable-log-reason,force-down}`` name the service by
host and binary. Only nova-compute services can be updated.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from novalite.api.compute.common import require_admin, strict_query
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Conflict, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import boolean, to_bool, validate
from novalite.servicegroup import is_up
from novalite.store import hosts
from novalite.store.hosts import ServiceUpdate
from novalite.timeutil import iso_micro

routes = web.RouteTableDef()
SERVICES = "/v2.1/os-services"
COMPUTE = hosts.COMPUTE_BINARY
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
    async with runtime(request).db.connect() as conn:
        rows = await hosts.list_services(
            conn, host=request.query.get("host") or None, binary=request.query.get("binary") or None
        )
    return json_response({"services": [service_view(request, r) for r in rows]})


def _service_id(request: web.Request, ident: str) -> str | int:
    """The path's service id: a uuid from 2.53, an integer below."""
    if microversion(request).at_least("2.53"):
        if not is_uuid(ident):
            raise BadRequest(f"Invalid uuid {ident}")
        return ident
    try:
        return int(ident)
    except ValueError:
        raise BadRequest("Invalid input received: id must be an integer") from None


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
        row = await hosts.get_service(conn, ident)
        if row is None:
            raise NotFound(f"Service {ident} could not be found.")
        if row.binary != COMPUTE:
            raise BadRequest(
                f"Updating a {row.binary} service is not supported. Only nova-compute services can be updated."
            )
        disabled: bool | None = None
        reason: str | None = None
        if "status" in body:
            if body["status"] == "enabled":
                if body.get("disabled_reason"):
                    raise BadRequest("Specifying 'disabled_reason' with status 'enabled' is invalid.")
                disabled = False
            else:
                disabled, reason = True, body.get("disabled_reason")
        forced_down = to_bool(body["forced_down"]) if "forced_down" in body else None
        change = ServiceUpdate(disabled=disabled, disabled_reason=reason, forced_down=forced_down)
        if change.empty:
            raise BadRequest("No updates were requested. Fields 'status' or 'forced_down' should be specified.")
        row = await hosts.update_service(conn, row.id, change)
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
        change = ServiceUpdate(disabled=False)
        result["status"] = "enabled"
    elif action == "disable":
        change = ServiceUpdate(disabled=True)
        result["status"] = "disabled"
    elif action == "disable-log-reason":
        if "disabled_reason" not in body:
            raise BadRequest("Missing disabled reason field")
        change = ServiceUpdate(disabled=True, disabled_reason=body["disabled_reason"])
        result.update(status="disabled", disabled_reason=body["disabled_reason"])
    else:
        if "forced_down" not in body:
            raise BadRequest("Missing forced_down field")
        change = ServiceUpdate(forced_down=to_bool(body["forced_down"]))
        result["forced_down"] = change.forced_down
    if binary != COMPUTE:
        raise BadRequest(f"Updating a {binary} service is not supported. Only nova-compute services can be updated.")
    async with runtime(request).db.begin() as conn:
        if not await hosts.update_service_by_host(conn, host, binary, change):
            raise NotFound(f"Host '{host}' is not mapped to any cell")
    return json_response({"service": result})


@routes.delete(SERVICES + "/{ident}")
async def delete_service(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-services:delete")
    ident = request.match_info["ident"]
    service_id = _service_id(request, ident)
    async with runtime(request).db.begin() as conn:
        row = await hosts.get_service(conn, service_id)
        if row is None:
            raise NotFound(f"Service {ident} not found.")
        if row.binary == COMPUTE and await hosts.count_instances_on_host(conn, row.host):
            raise Conflict(
                "Unable to delete compute service that is hosting instances. Migrate or delete the instances first."
            )
        await hosts.delete_service(conn, row)
    return web.Response(status=204)
