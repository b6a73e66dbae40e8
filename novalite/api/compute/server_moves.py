"""Server actions that move a server between hosts (issue 10): resize, confirm/revert, cold
and live migration (``os-migrateLive``) and evacuation, with the migration records they write.

Registered on the same ``POST /servers/{id}/action`` endpoint as the power actions
(:func:`novalite.api.compute.server_actions.register`). Each checks what Nova's
``compute/api.py`` checks, in its order — lock, vm_state, task_state, the host being up,
the destination host, the flavor, quota — then, in one transaction, sets the task state
(conditional UPDATE), writes the migration, starts the instance action and puts the
conductor's (or the agent's) message into the outbox.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from novalite import states
from novalite.api.compute import server_actions
from novalite.api.compute.common import require_admin, require_member
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Conflict
from novalite.api.errors import NotFound as NotFoundHTTP
from novalite.api.http import context, json_response, runtime
from novalite.context import RequestContext
from novalite.errors import NotFound
from novalite.relay import cast_after_commit
from novalite.store import Connection, actions, flavors, hosts
from novalite.store import migrations as moves
from novalite.store import servers as records
from novalite.store.quotas import limits_for, lock_project_usage, quota_overs, usage_for

routes = web.RouteTableDef()

RESIZE_SCHEMA_KEYS = {"flavorRef", "OS-DCF:diskConfig"}


def _conflict(action: str, server_id: str, attr: str, state: Any) -> Conflict:
    return Conflict(f"Cannot '{action}' instance {server_id} while it is in {attr} {state}")


def _flavor_json(flavor: Any) -> dict[str, Any]:
    return {
        "flavorid": flavor.flavorid,
        "name": flavor.name,
        "vcpus": flavor.vcpus,
        "memory_mb": flavor.memory_mb,
        "root_gb": flavor.root_gb,
        "ephemeral_gb": flavor.ephemeral_gb,
        "swap": flavor.swap,
        "extra_specs": dict(flavor.extra_specs or {}),
    }


async def _movable_row(conn: Connection, ctx: RequestContext, server_id: str, action: str, down_time: float) -> Any:
    """The server, locked, if ``action`` may move it: Nova's ``check_instance_lock``,
    ``check_instance_state(ACTIVE, STOPPED; task None)`` and ``check_instance_host(up)``."""
    row = await records.visible_instance(conn, ctx, server_id, lock=True)
    if row.locked and not ctx.is_admin:
        raise Conflict(f"Instance {server_id} is locked")
    vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
    if vm_state not in (states.ACTIVE, states.STOPPED):
        raise _conflict(action, server_id, "vm_state", vm_state)
    if row.task_state is not None:
        raise _conflict(action, server_id, "task_state", row.task_state)
    if not row.host:
        raise Conflict(f"Instance {server_id} is not ready")
    if not await records.compute_host_is_up(conn, row.host, down_time):
        raise Conflict("Service is unavailable at this time.")
    return row


async def _check_upsize_quota(
    conn: Connection, settings: Any, project_id: str, current: dict[str, Any], new: dict[str, Any]
) -> None:
    """Nova's ``_check_quota_for_upsize``: only the growth in cores and RAM counts (403)."""
    deltas = {
        "cores": max(0, int(new["vcpus"]) - int(current["vcpus"])),
        "ram": max(0, int(new["memory_mb"]) - int(current["memory_mb"])),
    }
    if not any(deltas.values()):
        return
    await lock_project_usage(conn, project_id)
    error = quota_overs(await limits_for(conn, settings, project_id), await usage_for(conn, project_id), deltas)
    if error is not None:
        raise error


async def _start_move(
    request: web.Request,
    conn: Connection,
    row: Any,
    action: str,
    migration_type: str,
    new_flavor: dict[str, Any],
    host: str | None,
) -> None:
    """Set resize_prep, write the migration, start the action, and cast to the conductor."""
    ctx = context(request)
    server_id = row.uuid
    system_metadata = dict(row.system_metadata or {})
    system_metadata["old_vm_state"] = row.vm_state
    changed = await records.update_instance(
        conn,
        server_id,
        expect={"vm_state": row.vm_state, "task_state": None},
        task_state=states.RESIZE_PREP,
        progress=0,
        system_metadata=system_metadata,
    )
    if not changed:
        raise _conflict(action, server_id, "task_state", "(changed concurrently)")
    migration_uuid = await moves.create_migration(
        conn,
        moves.NewMigration(
            instance_uuid=server_id,
            migration_type=migration_type,
            source_compute=row.host,
            source_node=row.node,
            old_flavor=dict(row.flavor),
            new_flavor=new_flavor,
            user_id=ctx.user_id,
            project_id=row.project_id,
        ),
    )
    await actions.start_action(conn, server_id, action, ctx.request_id, ctx.user_id, ctx.project_id)
    await cast_after_commit(
        conn, ctx, "conductor", "resize_instance", instance_uuid=server_id, migration_uuid=migration_uuid, host=host
    )


async def _resize(request: web.Request, body: Any) -> web.Response:
    ctx = context(request)
    server_id = request.match_info["server_id"]
    if not isinstance(body, dict) or "flavorRef" not in body:
        raise BadRequest(f"Invalid input for field/attribute resize. Value: {body}. 'flavorRef' is a required property")
    extra = sorted(set(body) - RESIZE_SCHEMA_KEYS)
    if extra:
        raise BadRequest(
            "Invalid input for field/attribute resize. Additional properties are not allowed "
            f"({', '.join(repr(k) for k in extra)} {'was' if len(extra) == 1 else 'were'} unexpected)"
        )
    ref = body["flavorRef"]
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        raise BadRequest(
            f"Invalid input for field/attribute flavorRef. Value: {ref}. {ref!r} is not of type 'string', 'integer'"
        )
    if ref == "":
        raise BadRequest("Invalid input for field/attribute flavorRef. Value: . '' is too short")
    flavor_id = str(ref).rstrip("/").rsplit("/", 1)[-1]
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id)
        require_member(ctx, "os_compute_api:servers:resize")
        row = await _movable_row(conn, ctx, server_id, "resize", rt.settings.service_down_time)
        try:
            flavor = await flavors.get_flavor(conn, ctx, flavor_id)
        except NotFound:
            flavor = None
        if flavor is None:
            raise BadRequest(f"Flavor {flavor_id} could not be found.")
        current = dict(row.flavor or {})
        if flavor.flavorid == current.get("flavorid"):
            raise BadRequest("When resizing, instances must change flavor!")
        if flavor.disabled:
            raise BadRequest(f"Flavor {flavor_id} could not be found.")
        if flavor.root_gb == 0 and int(current.get("root_gb") or 0) != 0:
            # Only a volume-backed server may (Nova); novalite's servers all boot from images.
            raise BadRequest("Resize to zero disk flavor is not allowed.")
        new_flavor = _flavor_json(flavor)
        await _check_upsize_quota(conn, rt.settings, row.project_id, current, new_flavor)
        await _start_move(request, conn, row, "resize", moves.RESIZE, new_flavor, None)
    return web.Response(status=202)


async def _migrate(request: web.Request, body: Any) -> web.Response:
    """Cold migration (admin): the same cycle as a resize, keeping the flavor; ``host`` from 2.56."""
    ctx = context(request)
    server_id = request.match_info["server_id"]
    rt = runtime(request)
    host: str | None = None
    if microversion(request).at_least("2.56") and body is not None:
        if not isinstance(body, dict):
            raise BadRequest(
                f"Invalid input for field/attribute migrate. Value: {body}. {body!r} is not of type 'object', 'null'"
            )
        extra = sorted(set(body) - {"host"})
        if extra:
            raise BadRequest(
                "Invalid input for field/attribute migrate. Additional properties are not allowed "
                f"({', '.join(repr(k) for k in extra)} {'was' if len(extra) == 1 else 'were'} unexpected)"
            )
        raw = body.get("host")
        if raw is not None and (not isinstance(raw, str) or not 1 <= len(raw) <= 255):
            raise BadRequest(f"Invalid input for field/attribute host. Value: {raw}. {raw!r} is not a valid hostname")
        host = raw
    async with rt.db.begin() as conn:
        await records.visible_instance(conn, ctx, server_id)
        require_admin(ctx, "os_compute_api:os-migrate-server:migrate" + (":host" if host else ""))
        row = await _movable_row(conn, ctx, server_id, "migrate", rt.settings.service_down_time)
        if host is not None:
            if host == row.host:
                raise BadRequest("Cannot migrate to the host where the server exists.")
            if await hosts.get_service_by_host(conn, host, hosts.COMPUTE_BINARY) is None:
                raise BadRequest(f"Compute host {host} could not be found.")
        await _start_move(request, conn, row, "migrate", moves.MIGRATION, dict(row.flavor), host)
    return web.Response(status=202)


async def _resized_row(request: web.Request, conn: Connection, action: str, policy: str) -> tuple[Any, Any]:
    """The VERIFY_RESIZE server and its ``finished`` migration (400 if it has none), locked."""
    ctx = context(request)
    server_id = request.match_info["server_id"]
    row = await records.visible_instance(conn, ctx, server_id, lock=True)
    require_member(ctx, f"os_compute_api:servers:{policy}")
    if row.locked and not ctx.is_admin:
        raise Conflict(f"Instance {server_id} is locked")
    vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
    if vm_state != states.RESIZED:
        raise _conflict(action, server_id, "vm_state", vm_state)
    if row.task_state is not None:
        raise _conflict(action, server_id, "task_state", row.task_state)
    mig = await moves.instance_migration(conn, server_id, "finished")
    if mig is None:
        raise BadRequest("Instance has not been resized.")
    return row, mig


async def _confirm_resize(request: web.Request, body: Any) -> web.Response:
    """Nova answers 204 (for historical reasons); the source host cleans up asynchronously."""
    ctx = context(request)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row, mig = await _resized_row(request, conn, "confirmResize", "confirm_resize")
        if not await records.compute_host_is_up(conn, mig.source_compute, rt.settings.service_down_time):
            raise Conflict("Service is unavailable at this time.")
        if not await moves.update_migration(conn, mig.uuid, expect_status=["finished"], status="confirming"):
            raise BadRequest("Instance has not been resized.")
        await actions.start_action(conn, row.uuid, "confirmResize", ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{mig.source_compute}",
            "confirm_resize",
            instance=payload,
            migration=moves.agent_payload(mig),
        )
    return web.Response(status=204)


async def _revert_resize(request: web.Request, body: Any) -> web.Response:
    ctx = context(request)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row, mig = await _resized_row(request, conn, "revertResize", "revert_resize")
        # A revert of a resize down grows the server again: Nova checks the growth (403).
        await _check_upsize_quota(conn, rt.settings, row.project_id, dict(row.flavor), dict(mig.old_flavor))
        changed = await records.update_instance(
            conn,
            row.uuid,
            expect={"vm_state": states.RESIZED, "task_state": None},
            task_state=states.RESIZE_REVERTING,
        )
        if not changed or not await moves.update_migration(
            conn, mig.uuid, expect_status=["finished"], status="reverting"
        ):
            raise _conflict("revertResize", row.uuid, "task_state", "(changed concurrently)")
        await actions.start_action(conn, row.uuid, "revertResize", ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{mig.dest_compute}",
            "revert_resize",
            instance=payload,
            migration=moves.agent_payload(mig),
        )
    return web.Response(status=202)


# -- live migration and evacuation (issue 10, second half) --------------------------------

#: What Nova's ``parameter_types.boolean`` accepts.
_BOOLEANS = {
    True: True,
    False: False,
    "true": True,
    "True": True,
    "TRUE": True,
    "1": True,
    "on": True,
    "On": True,
    "ON": True,
    "yes": True,
    "Yes": True,
    "YES": True,
    "false": False,
    "False": False,
    "FALSE": False,
    "0": False,
    "off": False,
    "Off": False,
    "OFF": False,
    "no": False,
    "No": False,
    "NO": False,
}


def _schema_error(field: str, value: Any, why: str) -> BadRequest:
    return BadRequest(f"Invalid input for field/attribute {field}. Value: {value}. {why}")


def _boolean(field: str, value: Any, auto: bool = False) -> bool | None:
    """Nova's strict boolean (and ``"auto"`` → None where allowed)."""
    if auto and value == "auto":
        return None
    if isinstance(value, (bool, str)) and value in _BOOLEANS:
        return _BOOLEANS[value]
    allowed = "True, 'True', 'TRUE', 'true', '1', 'ON', 'On', 'on', 'YES', 'Yes', 'yes', False, 'False', "
    allowed += "'FALSE', 'false', '0', 'OFF', 'Off', 'off', 'NO', 'No', 'no'" + (", 'auto'" if auto else "")
    raise _schema_error(field, value, f"{value!r} is not one of [{allowed}]")


def _object_body(action: str, body: Any, allowed: set[str], required: list[str]) -> dict[str, Any]:
    """The action's body checked as Nova's JSON schema does: an object, no other keys,
    the required ones there."""
    if not isinstance(body, dict):
        raise _schema_error(action, body, f"{body!r} is not of type 'object'")
    for key in required:
        if key not in body:
            raise _schema_error(action, body, f"'{key}' is a required property")
    extra = sorted(set(body) - allowed)
    if extra:
        raise _schema_error(
            action,
            body,
            f"Additional properties are not allowed ({', '.join(repr(k) for k in extra)} "
            f"{'was' if len(extra) == 1 else 'were'} unexpected)",
        )
    host = body.get("host")
    if host is not None and (not isinstance(host, str) or not 1 <= len(host) <= 255):
        raise _schema_error("host", host, f"{host!r} is not a valid hostname")
    return body


def _live_body(request: web.Request, body: Any) -> tuple[str | None, bool | None]:
    """``os-migrateLive``'s body per microversion: (host, block_migration; None = auto)."""
    mv = microversion(request)
    allowed, required = {"block_migration", "host"}, ["block_migration", "host"]
    if mv.below("2.25"):
        allowed.add("disk_over_commit")
        required.append("disk_over_commit")
    elif mv.at_least("2.30") and mv.below("2.68"):
        allowed.add("force")
    body = _object_body("os-migrateLive", body, allowed, required)
    host = body.get("host")
    block = _boolean("block_migration", body["block_migration"], auto=mv.at_least("2.25"))
    if mv.below("2.25"):
        _boolean("disk_over_commit", body["disk_over_commit"])  # checked, then unused (Nova: deprecated)
    if "force" in body and _boolean("force", body["force"]) and not host:
        raise BadRequest("Can't force to a non-provided destination")
    return host, block


def _new_migration(ctx: RequestContext, row: Any, migration_type: str) -> moves.NewMigration:
    return moves.NewMigration(
        instance_uuid=row.uuid,
        migration_type=migration_type,
        source_compute=row.host,
        source_node=row.node,
        old_flavor=dict(row.flavor),
        new_flavor=dict(row.flavor),
        user_id=ctx.user_id,
        project_id=row.project_id,
    )


async def _check_target(conn: Connection, row: Any, host: str | None) -> None:
    if host is None:
        return
    if await hosts.get_service_by_host(conn, host, hosts.COMPUTE_BINARY) is None:
        raise BadRequest(f"Compute host {host} could not be found.")
    if host == row.host:
        raise BadRequest(f"Unable to migrate instance ({row.uuid}) to current host ({host}).")


async def _migrate_live(request: web.Request, body: Any) -> web.Response:
    """Live migration (admin): Nova's ``compute/api.py live_migrate`` checks, then the
    conductor schedules (``host`` is checked by the scheduler's filters too, forced or not)."""
    ctx = context(request)
    server_id = request.match_info["server_id"]
    rt = runtime(request)
    host, block_migration = _live_body(request, body)
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        require_admin(ctx, "os_compute_api:os-migrate-server:migrate_live" + (":host" if host else ""))
        if row.locked and not ctx.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
        if vm_state not in (states.ACTIVE, states.PAUSED):
            raise _conflict("os-migrateLive", server_id, "vm_state", vm_state)
        if row.task_state is not None:
            raise _conflict("os-migrateLive", server_id, "task_state", row.task_state)
        if not row.host or not await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
            raise BadRequest(f"Compute service of {row.host} is unavailable at this time.")
        await _check_target(conn, row, host)
        if not await records.update_instance(
            conn,
            server_id,
            expect={"vm_state": row.vm_state, "task_state": None},
            task_state=states.MIGRATING,
            progress=0,
        ):
            raise _conflict("os-migrateLive", server_id, "task_state", "(changed concurrently)")
        migration_uuid = await moves.create_migration(
            conn, _new_migration(ctx, row, moves.LIVE_MIGRATION), status="accepted", dest_compute=host
        )
        await actions.start_action(conn, server_id, "live-migration", ctx.request_id, ctx.user_id, ctx.project_id)
        await cast_after_commit(
            conn,
            ctx,
            "conductor",
            "live_migrate_instance",
            instance_uuid=server_id,
            migration_uuid=migration_uuid,
            host=host,
            block_migration=block_migration,
        )
    return web.Response(status=202)


def _evacuate_body(request: web.Request, body: Any) -> tuple[str | None, str]:
    """``evacuate``'s body per microversion: (host, the admin password)."""
    mv = microversion(request)
    allowed = {"host", "adminPass"}
    required: list[str] = []
    if mv.below("2.14"):
        allowed.add("onSharedStorage")
        required.append("onSharedStorage")
    elif mv.at_least("2.29") and mv.below("2.68"):
        allowed.add("force")
    body = _object_body("evacuate", body, allowed, required)
    host = body.get("host")
    if "force" in body and _boolean("force", body["force"]) and not host:
        raise BadRequest("Can't force to a non-provided destination")
    if mv.below("2.14") and _boolean("onSharedStorage", body["onSharedStorage"]):
        # novalite has no shared instance storage: the server is always rebuilt from its image.
        if "adminPass" in body:
            raise BadRequest("admin password can't be changed on existing disk")
    password = body.get("adminPass")
    if password is not None and not isinstance(password, str):
        raise _schema_error("adminPass", password, f"{password!r} is not of type 'string'")
    return host, password or secrets.token_urlsafe(9)


async def _evacuate(request: web.Request, body: Any) -> web.Response:
    """Evacuate (admin): only from a host whose compute service is down (or forced down)."""
    ctx = context(request)
    server_id = request.match_info["server_id"]
    rt = runtime(request)
    mv = microversion(request)
    host, password = _evacuate_body(request, body)
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        require_admin(ctx, "os_compute_api:os-evacuate")
        if host is not None and await hosts.get_service_by_host(conn, host, hosts.COMPUTE_BINARY) is None:
            raise NotFoundHTTP(f"Compute host {host} not found.")
        if row.host == host:
            raise BadRequest("The target host can't be the same one.")
        vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
        if vm_state not in (states.ACTIVE, states.STOPPED, states.ERROR):
            raise _conflict("evacuate", server_id, "vm_state", vm_state)
        if row.task_state is not None:
            raise _conflict("evacuate", server_id, "task_state", row.task_state)
        if not row.host:
            raise Conflict(f"Instance {server_id} is not ready")
        if await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
            raise BadRequest(f"Compute service of {row.host} is still in use.")
        if not await records.update_instance(
            conn, server_id, expect={"vm_state": row.vm_state, "task_state": None}, task_state=states.REBUILDING
        ):
            raise _conflict("evacuate", server_id, "task_state", "(changed concurrently)")
        migration_uuid = await moves.create_migration(
            conn, _new_migration(ctx, row, moves.EVACUATION), status="accepted", dest_compute=host
        )
        await actions.start_action(conn, server_id, "evacuate", ctx.request_id, ctx.user_id, ctx.project_id)
        await cast_after_commit(
            conn,
            ctx,
            "conductor",
            "evacuate_instance",
            instance_uuid=server_id,
            migration_uuid=migration_uuid,
            host=host,
            target_state=states.STOPPED if mv.at_least("2.95") else None,
        )
    if mv.below("2.14"):
        return json_response({"adminPass": password})
    return web.Response(status=200)


server_actions.register("resize", _resize)
server_actions.register("migrate", _migrate)
server_actions.register("confirmResize", _confirm_resize)
server_actions.register("revertResize", _revert_resize)
server_actions.register("os-migrateLive", _migrate_live)
server_actions.register("evacuate", _evacuate)
