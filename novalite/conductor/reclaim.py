"""The reclaim of soft-deleted servers (Nova's ``_reclaim_queued_deletes``).

With ``reclaim_instance_interval`` > 0 the API soft-deletes: the server stays, powered off
and SOFT_DELETED, holding its claim and quota, so its owner can restore it. This periodic
task of every conductor deletes those whose soft delete is older than the interval, by the
normal delete path: ``terminate_instance`` to the host's agent through the outbox (the agent
reports ``instance_destroyed``, which frees the claim), or — host down — a local delete.
Several conductors may run it: each delete is a conditional UPDATE, so one of them wins.
A reclaimed server that was shelved (SHELVED on its host, or SHELVED_OFFLOADED on none) loses
its shelve image too, as with any delete: ``delete_shelved_image`` to the conductor through
the outbox, in the reclaim's transaction (see :func:`novalite.store.shelved.shelve_image_to_delete`).

It also puts SOFT_DELETED back on soft-deleted servers whose power-off did not end in that
state (it failed, or an older agent ran it; see :func:`novalite.states.is_soft_deleted`).
With the interval 0 it does nothing, whatever is soft-deleted stays until restored or
force-deleted.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from novalite import states
from novalite.context import RequestContext
from novalite.log import bind_request_id, get_logger
from novalite.relay import cast_after_commit
from novalite.runtime import ControllerRuntime
from novalite.store import actions
from novalite.store import servers as records
from novalite.store.shelved import shelve_image_to_delete
from novalite.timeutil import utcnow

log = get_logger("novalite.conductor.reclaim")


def tick(interval: float) -> float:
    """Seconds between two runs: a tenth of the interval, so a server is reclaimed soon after
    it, but at least every 5 s (the vm_state repair should not wait long) and at most every
    0.5 s (one cheap query per run)."""
    return min(5.0, max(0.5, interval / 10))


async def reclaim_loop(rt: ControllerRuntime) -> None:
    """Run :func:`reclaim` forever (a task of :class:`ConductorManager`); errors are logged,
    never fatal, so a database hiccup delays a reclaim but does not end it."""
    while True:
        interval = rt.settings.reclaim_instance_interval
        await asyncio.sleep(tick(interval) if interval > 0 else 10.0)
        if rt.settings.reclaim_instance_interval <= 0:
            continue
        try:
            await reclaim(rt)
        except Exception:
            log.exception("conductor.reclaim_failed")


async def reclaim(rt: ControllerRuntime, ctx: RequestContext | None = None) -> list[str]:
    """Delete the servers soft-deleted longer than ``reclaim_instance_interval`` ago; their uuids."""
    ctx = ctx or RequestContext.admin()
    interval = rt.settings.reclaim_instance_interval
    if interval <= 0:
        return []
    reclaimed: list[str] = []
    with bind_request_id(ctx.request_id):
        async with rt.db.connect() as conn:
            rows = await records.soft_deleted_instances(conn)
        cutoff = utcnow() - timedelta(seconds=interval)
        for row in rows:
            if row.deleted_at <= cutoff:
                if await _delete(rt, ctx, row):
                    reclaimed.append(row.uuid)
            elif row.task_state is None and row.vm_state != states.SOFT_DELETED:
                await _mark_soft_deleted(rt, row)
    return reclaimed


async def _delete(rt: ControllerRuntime, ctx: RequestContext, row: Any) -> bool:
    """One expired server through the delete path; False if it waits (its power-off is under
    way on a live host: next run) or changed meanwhile (restored, force-deleted, or reclaimed
    by another conductor). On a dead host a pending task does not stop the local delete: the
    task's report may never come, and the server must not stay soft-deleted for ever."""
    async with rt.db.begin() as conn:
        host_up = row.host is not None and await records.compute_host_is_up(
            conn, row.host, rt.settings.service_down_time
        )
        if host_up and row.task_state is not None:
            return False
        # Claims the row (-> DELETING) so that no other conductor, restore or forceDelete acts
        # on it as well; the same deleted_at: still the soft delete we read (a restore clears it).
        if not await records.update_instance(
            conn,
            row.uuid,
            expect={
                "deleted": False,
                "deleted_at": row.deleted_at,
                "task_state": row.task_state,
                "vm_state": row.vm_state,
            },
            task_state=states.DELETING,
        ):
            return False
        await actions.start_action(conn, row.uuid, "delete", ctx.request_id, ctx.user_id, row.project_id)
        shelve_image = shelve_image_to_delete(row)
        if shelve_image:
            await cast_after_commit(
                conn, ctx, "conductor", "delete_shelved_image", instance_uuid=row.uuid, image_id=shelve_image
            )
        if not host_up:
            log.warning("conductor.reclaim_local_delete", instance=row.uuid, host=row.host, reason="host down")
            await records.finalize_delete(conn, row.uuid)
            await actions.finish_action(conn, row.uuid, ctx.request_id)
        else:
            payload = await records.payload_from_row(conn, row)
            await cast_after_commit(conn, ctx, f"compute.{row.host}", "terminate_instance", instance=payload)
    log.info("conductor.reclaimed", instance=row.uuid, deleted_at=str(row.deleted_at), local=not host_up)
    return True


async def _mark_soft_deleted(rt: ControllerRuntime, row: Any) -> None:
    """Put SOFT_DELETED back after the agent's power-off report set another vm_state."""
    async with rt.db.begin() as conn:
        await records.update_instance(
            conn,
            row.uuid,
            expect={"deleted": False, "deleted_at": row.deleted_at, "task_state": None, "vm_state": row.vm_state},
            vm_state=states.SOFT_DELETED,
        )
