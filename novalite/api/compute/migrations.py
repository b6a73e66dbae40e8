"""Listing moves: ``GET /os-migrations`` (admin) and ``GET /servers/{id}/migrations[/{mid}]``.

As Nova: ``/os-migrations`` filters by ``host`` (source or destination), ``status``,
``instance_uuid``, ``migration_type`` (and from 2.80 ``user_id``/``project_id``); from 2.23
every migration shows its ``migration_type`` (in-progress live migrations a link); from 2.59
the list is newest first with ``limit``/``marker`` paging (by uuid), ``changes-since``, and
each migration's ``uuid``; from 2.80 ``user_id`` and ``project_id``. The per-server routes
(2.23+) list only *in-progress live migrations*, exactly as Nova, so a resize is not there.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite import states
from novalite.api.compute.common import compute_base, page_params, require_admin
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Conflict, NotFound
from novalite.api.http import context, json_response, runtime
from novalite.relay import cast_after_commit
from novalite.store import actions
from novalite.store import migrations as moves
from novalite.store import servers as records
from novalite.timeutil import iso_micro, parse_iso

routes = web.RouteTableDef()

DETAIL_FIELDS = (
    "memory_total",
    "memory_processed",
    "memory_remaining",
    "disk_total",
    "disk_processed",
    "disk_remaining",
)


def _time(name: str, raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise BadRequest(
            f"Invalid input for field/attribute {name}. Value: {raw}. '{raw}' is not a 'date-time'"
        ) from None


def _flavor_pk(flavor: Any, pks: dict[str, int]) -> int | None:
    return pks.get(str((flavor or {}).get("flavorid")))


def _list_view(request: web.Request, mig: Any, pks: dict[str, int]) -> dict[str, Any]:
    mv = microversion(request)
    view: dict[str, Any] = {
        "created_at": iso_micro(mig.created_at),
        "dest_compute": mig.dest_compute,
        "dest_host": mig.dest_host,
        "dest_node": mig.dest_node,
        "id": mig.id,
        "instance_uuid": mig.instance_uuid,
        "new_instance_type_id": _flavor_pk(mig.new_flavor, pks),
        "old_instance_type_id": _flavor_pk(mig.old_flavor, pks),
        "source_compute": mig.source_compute,
        "source_node": mig.source_node,
        "status": mig.status,
        "updated_at": iso_micro(mig.updated_at),
    }
    if mv.at_least("2.23"):
        view["migration_type"] = mig.migration_type
        if mig.migration_type == "live-migration" and mig.status in moves.LIVE_IN_PROGRESS:
            base = compute_base(request)
            path = f"servers/{mig.instance_uuid}/migrations/{mig.id}"
            view["links"] = [
                {"rel": "self", "href": f"{base}/v2.1/{path}"},
                {"rel": "bookmark", "href": f"{base}/{path}"},
            ]
    if mv.at_least("2.59"):
        view["uuid"] = mig.uuid
    if mv.at_least("2.80"):
        view["user_id"] = mig.user_id
        view["project_id"] = mig.project_id
    return view


@routes.get("/v2.1/os-migrations")
async def list_migrations(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-migrations:index")
    mv = microversion(request)
    q = request.query
    paged = mv.at_least("2.59")
    where = moves.MigrationFilter(
        host=q.get("host"),
        status=q.get("status"),
        instance_uuid=q.get("instance_uuid"),
        migration_type=q.get("migration_type"),
        user_id=q.get("user_id") if mv.at_least("2.80") else None,
        project_id=q.get("project_id") if mv.at_least("2.80") else None,
        changes_since=_time("changes-since", q.get("changes-since")) if paged else None,
        changes_before=_time("changes-before", q.get("changes-before")) if mv.at_least("2.66") else None,
    )
    if where.changes_since and where.changes_before and where.changes_since > where.changes_before:
        raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
    limit, marker = page_params(request) if paged else (None, None)
    async with runtime(request).db.connect() as conn:
        try:
            rows = await moves.list_migrations(conn, where, limit=limit, marker=marker)
        except LookupError:
            raise BadRequest(f"Marker {marker} could not be found.") from None
        pks = await moves.flavor_pks(conn, rows)
    body: dict[str, Any] = {"migrations": [_list_view(request, m, pks) for m in rows]}
    if paged and limit and len(rows) == limit:
        query = {k: v for k, v in q.items() if k != "marker"}
        query.update(marker=rows[-1].uuid, limit=str(limit))
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        body["migrations_links"] = [{"rel": "next", "href": f"{compute_base(request)}/v2.1/os-migrations?{qs}"}]
    return json_response(body)


def _server_view(request: web.Request, mig: Any) -> dict[str, Any]:
    mv = microversion(request)
    view: dict[str, Any] = {
        "created_at": iso_micro(mig.created_at),
        "dest_compute": mig.dest_compute,
        "dest_host": mig.dest_host,
        "dest_node": mig.dest_node,
        "disk_processed_bytes": mig.disk_processed,
        "disk_remaining_bytes": mig.disk_remaining,
        "disk_total_bytes": mig.disk_total,
        "id": mig.id,
        "memory_processed_bytes": mig.memory_processed,
        "memory_remaining_bytes": mig.memory_remaining,
        "memory_total_bytes": mig.memory_total,
        "server_uuid": mig.instance_uuid,
        "source_compute": mig.source_compute,
        "source_node": mig.source_node,
        "status": mig.status,
        "updated_at": iso_micro(mig.updated_at),
    }
    if mv.at_least("2.59"):
        view["uuid"] = mig.uuid
    if mv.at_least("2.80"):
        view["user_id"] = mig.user_id
        view["project_id"] = mig.project_id
    return view


async def _server(request: web.Request) -> str:
    """The server (404 if not visible), then the policy (admin), as Nova orders them."""
    ctx = context(request)
    if microversion(request).below("2.23"):
        raise NotFound("The resource could not be found.")
    server_id = request.match_info["server_id"]
    async with runtime(request).db.connect() as conn:
        await records.visible_instance(conn, ctx, server_id)
    require_admin(ctx, "os_compute_api:servers:migrations:index")
    return server_id


@routes.get("/v2.1/servers/{server_id}/migrations")
async def server_migrations(request: web.Request) -> web.Response:
    server_id = await _server(request)
    where = moves.MigrationFilter(
        instance_uuid=server_id, migration_type="live-migration", statuses=moves.LIVE_IN_PROGRESS
    )
    async with runtime(request).db.connect() as conn:
        rows = await moves.list_migrations(conn, where)
    return json_response({"migrations": [_server_view(request, m) for m in reversed(rows)]})


@routes.get("/v2.1/servers/{server_id}/migrations/{migration_id}")
async def server_migration(request: web.Request) -> web.Response:
    server_id = await _server(request)
    raw = request.match_info["migration_id"]
    async with runtime(request).db.connect() as conn:
        mig = await moves.migration_by_id(conn, raw)
    if mig is None or mig.instance_uuid != server_id:
        raise NotFound(f"In-progress live migration {raw} is not found for server {server_id}.")
    if mig.migration_type != "live-migration":
        raise NotFound(f"Migration {raw} for server {server_id} is not live-migration.")
    if mig.status not in moves.LIVE_IN_PROGRESS:
        raise NotFound(f"Live migration {raw} for server {server_id} is not in progress.")
    return json_response({"migration": _server_view(request, mig)})


# -- abort and force complete (2.24, 2.65; 2.22) ---------------------------------------------


def _invalid_migration_state(mig: Any, server_id: str, method: str) -> BadRequest:
    return BadRequest(
        f"Migration {mig.id} state of instance {server_id} is {mig.status}. "
        f"Cannot {method} while the migration is in this state."
    )


async def _migration_for(conn: Any, server_id: str, raw: str) -> Any:
    mig = await moves.migration_by_id(conn, raw)
    if mig is None or mig.instance_uuid != server_id:
        raise NotFound(f"Migration {raw} not found for instance {server_id}")
    return mig


def _live_task_check(row: Any, server_id: str, action: str, vm_states: tuple[str, ...] | None = None) -> None:
    """Nova's ``check_instance_lock`` + ``check_instance_state(task_state=[MIGRATING])``."""
    if vm_states is not None and row.vm_state not in vm_states:
        raise Conflict(f"Cannot '{action}' instance {server_id} while it is in vm_state {row.vm_state}")
    if row.task_state != states.MIGRATING:
        raise Conflict(f"Cannot '{action}' instance {server_id} while it is in task_state {row.task_state}")


@routes.delete("/v2.1/servers/{server_id}/migrations/{migration_id}")
async def abort_migration(request: web.Request) -> web.Response:
    """Abort a live migration: a ``running`` one (the source's driver stops the copy), or from
    2.65 a ``queued``/``preparing`` one (the destination's report then rolls it back)."""
    ctx = context(request)
    mv = microversion(request)
    if mv.below("2.24"):
        raise NotFound("The resource could not be found.")
    server_id = request.match_info["server_id"]
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        require_admin(ctx, "os_compute_api:servers:migrations:delete")
        if row.locked and not ctx.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        _live_task_check(row, server_id, "abort live migration")
        mig = await _migration_for(conn, server_id, request.match_info["migration_id"])
        allowed = ["running", *(["queued", "preparing"] if mv.at_least("2.65") else [])]
        if mig.status not in allowed or mig.migration_type != moves.LIVE_MIGRATION:
            raise _invalid_migration_state(mig, server_id, "abort live migration")
        await actions.start_action(
            conn, server_id, "live-migration-cancel", ctx.request_id, ctx.user_id, ctx.project_id
        )
        if mig.status != "running":
            await moves.update_migration(conn, mig.uuid, expect_status=["queued", "preparing"], status="cancelled")
        else:
            payload = await records.payload_from_row(conn, row)
            await cast_after_commit(
                conn,
                ctx,
                f"compute.{mig.source_compute}",
                "live_migration_abort",
                instance=payload,
                migration_id=mig.id,
            )
        await actions.finish_action(conn, server_id, ctx.request_id)
    return web.Response(status=202)


@routes.post("/v2.1/servers/{server_id}/migrations/{migration_id}/action")
async def migration_action(request: web.Request) -> web.Response:
    """``force_complete`` (2.22): the running live migration converges now."""
    ctx = context(request)
    if microversion(request).below("2.22"):
        raise NotFound("The resource could not be found.")
    server_id = request.match_info["server_id"]
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("Malformed request body") from None
    if not isinstance(body, dict) or set(body) != {"force_complete"} or body["force_complete"] is not None:
        raise BadRequest(
            f"Invalid input for field/attribute force_complete. Value: {body}. 'force_complete' is a required property"
        )
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        require_admin(ctx, "os_compute_api:servers:migrations:force_complete")
        if row.locked and not ctx.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        _live_task_check(row, server_id, "force_complete", (states.ACTIVE,))
        try:
            mig = await _migration_for(conn, server_id, request.match_info["migration_id"])
        except NotFound as exc:
            raise BadRequest(str(exc)) from None
        if mig.status != "running" or mig.migration_type != moves.LIVE_MIGRATION:
            raise _invalid_migration_state(mig, server_id, "force complete")
        await actions.start_action(
            conn, server_id, "live-migration-force-complete", ctx.request_id, ctx.user_id, ctx.project_id
        )
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{mig.source_compute}",
            "live_migration_force_complete",
            instance=payload,
            migration_id=mig.id,
        )
        await actions.finish_action(conn, server_id, ctx.request_id)
    return web.Response(status=202)
