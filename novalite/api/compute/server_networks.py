"""A server's networks: ``/servers/{id}/ips``, ``os-interface`` and the security-group actions.

* ``GET /servers/{id}/ips`` and ``/ips/{network}``: the addresses by network name (Nova's
  ``ips`` API: version and address only).
* ``os-interface``: list, show, attach (``net_id``, ``port_id``, ``fixed_ips``; ``tag`` from
  2.49, shown from 2.70) and detach. The port is bound or made (or unbound or deleted) in the
  API's transaction, which also queues the cast that has the host's agent hot-plug it
  (``attach_interface`` / ``detach_interface``, through the outbox); the action's event
  tells how the hypervisor took it.
* ``addSecurityGroup`` / ``removeSecurityGroup``: the group on (off) every port of the server;
  ``GET /servers/{id}/os-security-groups``: its ports' groups in Nova's format.

The ports themselves are the network service's (:mod:`novalite.store.server_ports`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite import states
from novalite.api.compute.common import require_member
from novalite.api.compute.microversions import microversion
from novalite.api.compute.server_actions import register
from novalite.api.errors import BadRequest, Conflict, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import validate
from novalite.relay import cast_after_commit
from novalite.store import Connection, actions, networks, server_ports
from novalite.store import servers as records

routes = web.RouteTableDef()


async def cast_port_security(conn: Connection, ctx: Any, **changed: Any) -> None:
    """Queue (outbox) the ``update_port_security`` casts a change of ports or groups calls for
    (:func:`~novalite.store.server_ports.port_security_updates`): running guests' rules follow."""
    for topic, args in await server_ports.port_security_updates(conn, **changed):
        await cast_after_commit(conn, ctx, topic, "update_port_security", **args)

_IP = {"type": "string", "oneOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
_UUID = {"type": "string", "format": "uuid"}


def _attach_schema(tag: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        "net_id": _UUID,
        "port_id": _UUID,
        "fixed_ips": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {"ip_address": _IP},
                "required": ["ip_address"],
                "additionalProperties": False,
            },
        },
    }
    if tag:
        props["tag"] = {"type": "string", "pattern": "^[^,/]*$", "minLength": 1, "maxLength": 60}
    return {
        "type": "object",
        "properties": {"interfaceAttachment": {"type": "object", "properties": props, "additionalProperties": False}},
        "additionalProperties": False,
    }


ATTACH_SCHEMA = _attach_schema(False)
ATTACH_SCHEMA_2_49 = _attach_schema(True)
#: The vm_states Nova attaches and detaches interfaces in (with no task under way).
INTERFACE_VM_STATES = (states.ACTIVE, states.PAUSED, states.STOPPED)


# -- ips ----------------------------------------------------------------------------------------


def _ips(ports: list[Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for p in ports:
        if p.ip:
            found.setdefault(p.network, []).append({"version": 6 if ":" in p.ip else 4, "addr": p.ip})
    return found


async def _server_ports(request: web.Request) -> list[Any]:
    ctx = context(request)
    async with runtime(request).db.connect() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"])
        return await server_ports.server_ports(conn, row.uuid)


@routes.get("/v2.1/servers/{server_id}/ips")
async def ips_index(request: web.Request) -> web.Response:
    return json_response({"addresses": _ips(await _server_ports(request))})


@routes.get("/v2.1/servers/{server_id}/ips/{network}")
async def ips_show(request: web.Request) -> web.Response:
    network = request.match_info["network"]
    found = _ips(await _server_ports(request))
    if network not in found:
        raise NotFound("Instance is not a member of specified network")
    return json_response({network: found[network]})


# -- os-interface -------------------------------------------------------------------------------


def _attachment(port: Any, fixed_ips: list[dict[str, str]], show_tag: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "net_id": port.network_id,
        "port_id": port.id,
        "mac_addr": port.mac,
        "port_state": port.status,
        "fixed_ips": fixed_ips,
    }
    if show_tag:
        view["tag"] = port.device_tag
    return view


@routes.get("/v2.1/servers/{server_id}/os-interface")
async def interface_index(request: web.Request) -> web.Response:
    ctx = context(request)
    show_tag = microversion(request).at_least("2.70")
    async with runtime(request).db.connect() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"])
        ports = await server_ports.server_ports(conn, row.uuid)
        ips = await networks.fixed_ips_of(conn, [p.id for p in ports])
    return json_response({"interfaceAttachments": [_attachment(p, ips[p.id], show_tag) for p in ports]})


async def _show_attachment(request: web.Request, conn: Connection, server_id: str, port_id: str) -> dict[str, Any]:
    ctx = context(request)
    try:
        port = await networks.get_port(conn, ctx, port_id)
    except networks.NotVisible:
        raise NotFound(f"Port id {port_id} could not be found.") from None
    if port.device_id != server_id:
        raise NotFound(f"Instance {server_id} does not have a port with id {port_id}")
    ips = await networks.fixed_ips_of(conn, [port_id])
    return {"interfaceAttachment": _attachment(port, ips[port_id], microversion(request).at_least("2.70"))}


@routes.get("/v2.1/servers/{server_id}/os-interface/{port_id}")
async def interface_show(request: web.Request) -> web.Response:
    ctx = context(request)
    async with runtime(request).db.connect() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"])
        body = await _show_attachment(request, conn, row.uuid, request.match_info["port_id"])
    return json_response(body)


async def _interface_row(request: web.Request, conn: Connection, action: str) -> Any:
    """The server of an attach/detach, locked; 409 as Nova's unless it may take the change now."""
    ctx = context(request)
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    row = await records.visible_instance(conn, ctx, server_id, lock=True)
    if row.locked and not ctx.is_admin:
        raise Conflict(f"Instance {server_id} is locked")
    vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
    if vm_state not in INTERFACE_VM_STATES:
        raise Conflict(f"Cannot '{action}' instance {server_id} while it is in vm_state {vm_state}")
    if row.task_state is not None:
        raise Conflict(f"Cannot '{action}' instance {server_id} while it is in task_state {row.task_state}")
    if not row.host or not await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
        raise Conflict(
            f"Cannot '{action}' instance {server_id}: its compute host {row.host or '(none)'} is down or unreachable."
        )
    return row


@routes.post("/v2.1/servers/{server_id}/os-interface")
async def interface_attach(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:os-attach-interfaces:create")
    mv = microversion(request)
    body = validate(await read_json(request), ATTACH_SCHEMA_2_49 if mv.at_least("2.49") else ATTACH_SCHEMA)
    attachment = (body or {}).get("interfaceAttachment") or {}
    network_id, port_id, tag = attachment.get("net_id"), attachment.get("port_id"), attachment.get("tag")
    fixed_ip = (attachment.get("fixed_ips") or [{}])[0].get("ip_address")
    if network_id and port_id:
        raise BadRequest("Must not input both network_id and port_id")
    if fixed_ip and not network_id:
        raise BadRequest("Must input network_id when request IP address")
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await _interface_row(request, conn, "attach_interface")
        new_port = await server_ports.attach_interface(
            conn, ctx, row, network_id=network_id, port_id=port_id, fixed_ip=fixed_ip, tag=tag
        )
        await records.update_instance(conn, row.uuid)  # the view shows the ports: bump updated_at
        await actions.start_action(conn, row.uuid, "attach_interface", ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        port = next(p for p in payload["ports"] if p["id"] == new_port)
        await cast_after_commit(conn, ctx, f"compute.{row.host}", "attach_interface", instance=payload, port=port)
        await cast_port_security(conn, ctx, port_ids={new_port})  # its groups have a new member
        view = await _show_attachment(request, conn, row.uuid, new_port)
    return json_response(view)


@routes.delete("/v2.1/servers/{server_id}/os-interface/{port_id}")
async def interface_detach(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:os-attach-interfaces:delete")
    port_id = request.match_info["port_id"]
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await _interface_row(request, conn, "detach_interface")
        before = await records.payload_from_row(conn, row)
        port = next((p for p in before["ports"] if p["id"] == port_id), None)
        if port is None:
            raise NotFound(f"Port {port_id} is not attached")
        gone = await server_ports.detach_interface(conn, row.uuid, port_id)
        await records.update_instance(conn, row.uuid)
        await actions.start_action(conn, row.uuid, "detach_interface", ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(conn, ctx, f"compute.{row.host}", "detach_interface", instance=payload, port=port)
        await cast_port_security(conn, ctx, group_ids=set(gone.security_groups or []))
    return web.Response(status=202)


# -- security groups ----------------------------------------------------------------------------


@routes.get("/v2.1/servers/{server_id}/os-security-groups")
async def server_security_groups(request: web.Request) -> web.Response:
    ctx = context(request)
    async with runtime(request).db.connect() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"])
        groups = await server_ports.server_security_groups(conn, row.uuid)
    return json_response({"security_groups": groups})




def _group_name(body: Any) -> str:
    """Nova's ``_parse`` of the action's argument."""
    if not isinstance(body, dict):
        raise BadRequest("Missing parameter dict")
    if "name" not in body:
        raise BadRequest("Security group not specified")
    name = body["name"]
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("Security group name cannot be empty")
    return name


async def _security_group_action(request: web.Request, body: Any, add: bool) -> web.Response:
    ctx = context(request)
    require_member(ctx, f"os_compute_api:os-security-groups:{'add' if add else 'remove'}")
    name = _group_name(body)
    async with runtime(request).db.begin() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"], lock=True)
        try:
            if add:
                group_id = await server_ports.add_security_group(conn, ctx, row, name)
            else:
                group_id = await server_ports.remove_security_group(conn, ctx, row, name)
        except server_ports.SecurityGroupNotFound as exc:
            raise NotFound(str(exc)) from None
        except server_ports.NoUniqueMatch as exc:
            raise Conflict(str(exc)) from None
        ports = [p.id for p in await server_ports.server_ports(conn, row.uuid)]
        await cast_port_security(conn, ctx, group_ids={group_id}, port_ids=ports)
    return web.Response(status=202)


async def _add_security_group(request: web.Request, body: Any) -> web.Response:
    return await _security_group_action(request, body, add=True)


async def _remove_security_group(request: web.Request, body: Any) -> web.Response:
    return await _security_group_action(request, body, add=False)


register("addSecurityGroup", _add_security_group)
register("removeSecurityGroup", _remove_security_group)
