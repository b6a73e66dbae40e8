"""Server actions: ``POST /servers/{id}/action`` with one key naming the action.

Each power action is checked against the instance's current vm_state and task_state
(Nova's rules; 409 ``conflictingRequest`` otherwise) and against its host's service
being up (409 rather than a request that would hang), then sets the task_state,
records the instance action, and casts to the host's agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from novalite import states
from novalite.api.compute.common import require_admin, require_member
from novalite.api.compute.microversions import microversion
from novalite.api.compute.servers import delete_instance
from novalite.api.errors import BadRequest, Conflict
from novalite.api.http import context, json_response, read_json, runtime
from novalite.bus import BusError
from novalite.relay import cast_after_commit
from novalite.store import actions
from novalite.store import servers as records
from novalite.store.shelved import SHELVE_SYSMETA, shelve_image_to_delete

routes = web.RouteTableDef()

#: Nova caps console output it returns (MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024


@dataclass(frozen=True)
class PowerAction:
    """A state-checked action handed to the agent."""

    name: str  # the action's name in messages and instance actions
    agent_method: str
    vm_states: tuple[str, ...]
    task_state: str
    task_states: tuple[str | None, ...] = (None,)


ACTIONS: dict[str, PowerAction] = {
    "os-stop": PowerAction("stop", "stop_instance", (states.ACTIVE, states.ERROR), states.POWERING_OFF),
    "os-start": PowerAction("start", "start_instance", (states.STOPPED,), states.POWERING_ON),
    "pause": PowerAction("pause", "pause_instance", (states.ACTIVE,), states.PAUSING),
    "unpause": PowerAction("unpause", "unpause_instance", (states.PAUSED,), states.UNPAUSING),
    "suspend": PowerAction("suspend", "suspend_instance", (states.ACTIVE,), states.SUSPENDING),
    "resume": PowerAction("resume", "resume_instance", (states.SUSPENDED,), states.RESUMING),
}
SOFT_REBOOT = PowerAction("reboot", "reboot_instance", (states.ACTIVE,), states.REBOOTING)
HARD_REBOOT = PowerAction(
    "reboot",
    "reboot_instance",
    (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED, states.ERROR),
    states.REBOOTING_HARD,
    (None, states.REBOOTING, states.REBOOTING_HARD),
)


def _conflict(action: str, server_id: str, attr: str, state: Any) -> Conflict:
    return Conflict(f"Cannot '{action}' instance {server_id} while it is in {attr} {state}")


async def _run(request: web.Request, action: PowerAction, **agent_args: Any) -> web.Response:
    ctx = context(request)
    require_member(ctx, f"os_compute_api:servers:{action.name}")
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        if row.locked and not ctx.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
        if vm_state not in action.vm_states:
            raise _conflict(action.name, server_id, "vm_state", vm_state)
        if row.task_state not in action.task_states:
            raise _conflict(action.name, server_id, "task_state", row.task_state)
        if not row.host or not await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
            raise Conflict(
                f"Cannot '{action.name}' instance {server_id}: its compute host {row.host or '(none)'} is down "
                "or unreachable."
            )
        # The conditional UPDATE makes the state check and the change one atomic step.
        changed = await records.update_instance(
            conn,
            server_id,
            expect={"vm_state": row.vm_state, "task_state": row.task_state},
            task_state=action.task_state,
        )
        if not changed:
            raise _conflict(action.name, server_id, "task_state", "(changed concurrently)")
        await actions.start_action(conn, server_id, action.name, ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(conn, ctx, f"compute.{row.host}", action.agent_method, instance=payload, **agent_args)
    return web.Response(status=202)


async def _reboot(request: web.Request, body: Any) -> web.Response:
    if not isinstance(body, dict) or "type" not in body:
        raise BadRequest(f"Invalid input for field/attribute reboot. Value: {body}. 'type' is a required property")
    kind = str(body["type"]).upper()
    if kind not in ("SOFT", "HARD"):
        raise BadRequest(
            f"Invalid input for field/attribute type. Value: {body['type']}. "
            f"'{body['type']}' is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']"
        )
    return await _run(request, HARD_REBOOT if kind == "HARD" else SOFT_REBOOT, reboot_type=kind)


async def _console_output(request: web.Request, body: Any) -> web.Response:
    ctx = context(request)
    # Nova's default for os-console-output is project member or admin: the log may hold secrets.
    require_member(ctx, "os_compute_api:os-console-output")
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    length = (body or {}).get("length") if isinstance(body, dict) else None
    if length is not None:
        try:
            length = int(length)
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(
                f"Invalid input for field/attribute length. Value: {length}. '{length}' is not of type 'integer'"
            ) from None
        if length < -1:
            raise BadRequest(
                f"Invalid input for field/attribute length. Value: {length}. {length} is less than the minimum of -1"
            )
    async with rt.db.connect() as conn:
        row = await records.visible_instance(conn, ctx, server_id)
        if not row.host or row.vm_state == states.BUILDING:
            raise Conflict(
                f"Instance {server_id} has not been scheduled to a host yet."
                if not row.host
                else f"Instance {server_id} is not ready"
            )
        if not await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
            raise Conflict(f"Compute host {row.host} of instance {server_id} is down.")
        payload = await records.payload_from_row(conn, row)
    try:
        output: str = await rt.bus.call(
            ctx, f"compute.{row.host}", "get_console_output", instance=payload, timeout=rt.settings.rpc_timeout
        )
    except BusError as exc:
        raise Conflict(f"Could not get the console output of instance {server_id}: {exc}") from None
    output = output[-MAX_CONSOLE_BYTES:]
    if length is not None and length >= 0:
        lines = output.splitlines(keepends=True)
        output = "".join(lines[-length:]) if length else ""
    return json_response({"output": output})


async def _set_lock(request: web.Request, locked: bool, reason: str | None) -> web.Response:
    """Lock or unlock: locked servers refuse actions from non-admins (409)."""
    ctx = context(request)
    action = "lock" if locked else "unlock"
    require_member(ctx, f"os_compute_api:os-lock-server:{action}")
    server_id = request.match_info["server_id"]
    async with runtime(request).db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        if locked:
            # Nova: the owner when the caller is of the server's project, else an admin.
            locked_by = "owner" if ctx.project_id == row.project_id else "admin"
            await records.update_instance(conn, server_id, locked=True, locked_reason=reason, locked_by=locked_by)
        else:
            if row.locked and row.locked_by == "admin" and not ctx.is_admin:
                require_admin(ctx, "os_compute_api:os-lock-server:unlock:unlock_override")
            await records.update_instance(conn, server_id, locked=False, locked_reason=None, locked_by=None)
        await actions.start_action(conn, server_id, action, ctx.request_id, ctx.user_id, ctx.project_id)
    return web.Response(status=202)


async def _lock(request: web.Request, body: Any) -> web.Response:
    reason = body.get("locked_reason") if isinstance(body, dict) else None
    if reason is not None and microversion(request).below("2.73"):
        raise BadRequest(
            "Invalid input for field/attribute lock. Additional properties are not allowed "
            "('locked_reason' was unexpected)"
        )
    return await _set_lock(request, True, reason)


async def _unlock(request: web.Request, body: Any) -> web.Response:
    return await _set_lock(request, False, None)


async def _reset_state(request: web.Request, body: Any) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-admin-actions:reset_state")
    state = (body or {}).get("state") if isinstance(body, dict) else None
    if state not in ("active", "error"):
        raise BadRequest(
            f"Invalid input for field/attribute state. Value: {state}. '{state}' is not one of ['active', 'error']"
        )
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    async with rt.db.begin() as conn:
        await records.visible_instance(conn, ctx, server_id, lock=True)
        await records.update_instance(conn, server_id, vm_state=state, task_state=None)
    return web.Response(status=202)


async def _soft_deleted_row(request: web.Request, conn: Any, action: str, policy: str) -> Any:
    """The server of a deferred-delete action (``os-deferred-delete``, project member or admin,
    as Nova); 409 if it is not soft-deleted, is locked (to non-admins), or has a task under way."""
    ctx = context(request)
    require_member(ctx, f"os_compute_api:os-deferred-delete:{policy}")
    server_id = request.match_info["server_id"]
    row = await records.visible_instance(conn, ctx, server_id, lock=True)
    if row.locked and not ctx.is_admin:
        raise Conflict(f"Instance {server_id} is locked")
    if not states.is_soft_deleted(row.deleted, row.deleted_at):
        raise _conflict(action, server_id, "vm_state", row.vm_state)
    if row.task_state is not None:
        raise _conflict(action, server_id, "task_state", row.task_state)
    return row


async def _restore(request: web.Request, body: Any) -> web.Response:
    """Undo a soft delete: power the guest on again (it ends ACTIVE when the agent reports);
    the claim and quota it kept are its own still."""
    ctx = context(request)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await _soft_deleted_row(request, conn, "restore", "restore")
        server_id = row.uuid
        if not row.host or not await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
            raise Conflict(
                f"Cannot 'restore' instance {server_id}: its compute host {row.host or '(none)'} is down "
                "or unreachable."
            )
        # Off until the power-on lands: a failed power-on leaves a SHUTOFF server (with the
        # fault) that os-start can retry, not one stuck soft-deleted without the mark.
        values: dict[str, Any] = {}
        shelve_image = shelve_image_to_delete(row)
        if shelve_image:
            # issue 11: a restored shelved server runs again (ACTIVE, as Nova), so it is no
            # longer shelved: its shelve image goes (the conductor deletes it) and is forgotten.
            sysmeta = {k: v for k, v in (row.system_metadata or {}).items() if k not in SHELVE_SYSMETA}
            values["system_metadata"] = sysmeta
        changed = await records.update_instance(
            conn,
            server_id,
            expect={"deleted": False, "task_state": None},
            vm_state=states.STOPPED,
            task_state=states.POWERING_ON,
            deleted_at=None,
            **values,
        )
        if not changed:
            raise _conflict("restore", server_id, "task_state", "(changed concurrently)")
        await actions.start_action(conn, server_id, "restore", ctx.request_id, ctx.user_id, ctx.project_id)
        if shelve_image:
            await cast_after_commit(
                conn, ctx, "conductor", "delete_shelved_image", instance_uuid=server_id, image_id=shelve_image
            )
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(conn, ctx, f"compute.{row.host}", "start_instance", instance=payload)
    return web.Response(status=202)


async def _force_delete(request: web.Request, body: Any) -> web.Response:
    """Delete a soft-deleted server now, by the normal delete path (terminate on its host,
    or a local delete if the host is down), without waiting for the reclaim."""
    ctx = context(request)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await _soft_deleted_row(request, conn, "forceDelete", "force")
        host_up = row.host is not None and await records.compute_host_is_up(
            conn, row.host, rt.settings.service_down_time
        )
        await delete_instance(conn, ctx, row, host_up=host_up)
    return web.Response(status=202)


def _simple(key: str) -> Callable[[web.Request, Any], Awaitable[web.Response]]:
    async def handler(request: web.Request, body: Any) -> web.Response:
        return await _run(request, ACTIONS[key])

    return handler


HANDLERS: dict[str, Callable[[web.Request, Any], Awaitable[web.Response]]] = {
    **{key: _simple(key) for key in ACTIONS},
    "reboot": _reboot,
    "os-getConsoleOutput": _console_output,
    "lock": _lock,
    "unlock": _unlock,
    "os-resetState": _reset_state,
    "restore": _restore,
    "forceDelete": _force_delete,
}


def register(name: str, handler: Callable[[web.Request, Any], Awaitable[web.Response]]) -> None:
    """Let other modules (consoles) add actions to the same endpoint."""
    HANDLERS[name] = handler


@routes.post("/v2.1/servers/{server_id}/action")
async def action(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("There is either no action or more than one action in the request body.")
    ((name, args),) = body.items()
    handler = HANDLERS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    return await handler(request, args)
