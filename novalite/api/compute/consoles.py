"""Remote consoles: ``POST /servers/{id}/remote-consoles`` (2.6+), the legacy
``os-getVNCConsole`` action (2.1-2.5), and ``GET /os-console-auth-tokens/{token}`` (admin).

The API asks the instance's compute agent over the bus where the guest's VNC server is
(never the driver itself), stores a console auth token bound to that address and host
(:mod:`novalite.store.consoles`), and answers the URL of novalite's noVNC page on the
console proxy. Only ``vnc``/``novnc`` consoles exist; every other protocol or type Nova's
schema allows is "unavailable" (400), as on a Nova whose other consoles are disabled.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite import states
from novalite.api.compute import server_actions
from novalite.api.compute.common import require_admin, require_member
from novalite.api.compute.microversions import microversion
from novalite.api.errors import ApiError, BadRequest, Conflict, NotFound, nova_body
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import validate
from novalite.bus import BusError, RemoteError
from novalite.store import consoles as tokens
from novalite.store import servers as records

routes = web.RouteTableDef()

PROTOCOLS_26 = ["vnc", "spice", "rdp", "serial"]
TYPES_26 = ["novnc", "xvpvnc", "rdp-html5", "spice-html5", "serial"]


def _create_schema(version: Any) -> dict[str, Any]:
    protocols, types = list(PROTOCOLS_26), list(TYPES_26)
    if version.at_least("2.8"):
        protocols.append("mks")
        types.append("webmks")
    if version.at_least("2.99"):
        types.append("spice-direct")
    return {
        "type": "object",
        "properties": {
            "remote_console": {
                "type": "object",
                "properties": {
                    "protocol": {"type": "string", "enum": protocols},
                    "type": {"type": "string", "enum": types},
                },
                "required": ["protocol", "type"],
                "additionalProperties": False,
            }
        },
        "required": ["remote_console"],
        "additionalProperties": False,
    }


_SCHEMAS: dict[str, dict[str, Any]] = {}

LEGACY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["novnc", "xvpvnc"]}},
    "required": ["type"],
    "additionalProperties": False,
}


def _unavailable(console_type: str) -> BadRequest:
    return BadRequest(f"Unavailable console type {console_type}.")


async def get_console_url(request: web.Request, protocol: str, console_type: str) -> str:
    """Ask the instance's host for its VNC address, store a token, return the console URL."""
    ctx = context(request)
    require_member(ctx, "os_compute_api:os-remote-consoles")
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    async with rt.db.connect() as conn:
        row = await records.visible_instance(conn, ctx, server_id)
        if protocol != "vnc" or console_type != "novnc":
            raise _unavailable(console_type)
        if not row.host:
            raise Conflict(f"Instance {server_id} is not ready.")
        if row.vm_state != states.ACTIVE or row.task_state == states.DELETING:
            raise Conflict(f"Instance {server_id} is not ready: it is in vm_state {row.vm_state}.")
        if not await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
            raise Conflict(f"Compute host {row.host} of instance {server_id} is down.")
        payload = await records.payload_from_row(conn, row)
    try:
        address = await rt.bus.call(
            ctx, f"compute.{row.host}", "get_vnc_console", instance=payload, timeout=rt.settings.rpc_timeout
        )
    except RemoteError as exc:
        if exc.exc_type in ("InvalidState", "InstanceNotFound"):
            raise Conflict(f"Instance {server_id} is not ready: {exc.message}") from None
        # NotSupported / DriverError: this hypervisor offers no VNC console (Nova's ConsoleTypeUnavailable)
        raise _unavailable(console_type) from None
    except BusError as exc:
        raise Conflict(f"Compute host {row.host} of instance {server_id} did not answer: {exc}") from None
    async with rt.db.begin() as conn:
        token = await tokens.issue(
            conn,
            instance_uuid=server_id,
            console_type=console_type,
            host=address["host"],
            port=int(address["port"]),
            compute_host=row.host,
            ttl=rt.settings.console_token_ttl,
        )
    return f"{rt.console_url or rt.settings.console_public_base()}/vnc.html?token={token}"


@routes.post("/v2.1/servers/{server_id}/remote-consoles")
async def create(request: web.Request) -> web.Response:
    version = microversion(request)
    if version.below("2.6"):
        raise NotFound("The resource could not be found.")
    key = "2.99" if version.at_least("2.99") else "2.8" if version.at_least("2.8") else "2.6"
    schema = _SCHEMAS.get(key) or _SCHEMAS.setdefault(key, _create_schema(version))
    body = validate(await read_json(request), schema)["remote_console"]
    url = await get_console_url(request, body["protocol"], body["type"])
    return json_response({"remote_console": {"protocol": body["protocol"], "type": body["type"], "url": url}})


async def _get_vnc_console_action(request: web.Request, body: Any) -> web.Response:
    if microversion(request).at_least("2.6"):
        raise NotFound("The resource could not be found.")  # Nova: the action is 2.1-2.5 only
    args = validate(body, LEGACY_SCHEMA)
    url = await get_console_url(request, "vnc", args["type"])
    return json_response({"console": {"type": args["type"], "url": url}})


server_actions.register("os-getVNCConsole", _get_vnc_console_action)


@routes.get("/v2.1/os-console-auth-tokens/{token}")
async def show_token(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-console-auth-tokens")
    token = request.match_info["token"].strip()
    if not token:
        raise BadRequest("token not provided")
    async with runtime(request).db.connect() as conn:
        auth = await tokens.lookup(conn, token)
    if auth is None:
        raise NotFound("Token not found")
    version = microversion(request)
    if version.below("2.31"):
        # Nova before 2.31 shows only rdp-html5 tokens; novalite has none of those.
        err = ApiError("The requested console type details are not accessible", 401)
        return json_response(nova_body(err), 401)
    console: dict[str, Any] = {
        "instance_uuid": auth.instance_uuid,
        "host": auth.host,
        "port": auth.port,
        "internal_access_path": None,
    }
    if version.at_least("2.99"):
        console["tls_port"] = None
    return json_response({"console": console})
