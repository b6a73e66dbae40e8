"""The conductor's half of moving servers (issue 10): a mixin of :class:`ConductorManager`,
so its methods are served on the ``conductor`` topic like the others.

* ``resize_instance`` (cast from the API's outbox, for ``resize`` and ``migrate``): asks the
  scheduler for a destination (``select_destinations`` over the bus, as builds do, with the
  *migration's* uuid as the consumer, so the destination is claimed generation-checked),
  then in one transaction swaps the claims — the instance's source allocation is re-owned by
  the migration, the destination's by the instance (:func:`placement.swap_for_move`) — and
  casts ``resize_instance`` to the source host. No valid host: the server stays as it was
  (task cleared), the action's event shows the error, as Nova.
* ``move_step`` (calls from agents): the outcome of each step on a host; moves the records,
  the claims and the instance's host along and casts the next step.
* periodically: resizes left in VERIFY_RESIZE longer than ``resize_confirm_window`` are
  confirmed.
* ``live_migrate_instance`` and ``evacuate_instance`` (casts from the API): the same
  scheduling and claim swap, then the destination's steps (``move_step`` again);
  ``live_migration_progress`` records the copy's progress; ``evacuated_instances`` /
  ``evacuation_cleaned`` let a host that comes back remove what was evacuated away from it
  (only then is its claim freed).
* at start (in-process bus): :meth:`MoveTasks.recover_moves` ends the moves a restart
  interrupted.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from novalite import states
from novalite.bus import CallTimeout, RemoteError
from novalite.bus.identity import require_controller, require_host
from novalite.config import Settings
from novalite.context import RequestContext
from novalite.log import bind_request_id, get_logger
from novalite.relay import cast_after_commit
from novalite.runtime import ControllerRuntime
from novalite.store import actions, placement
from novalite.store import migrations as moves
from novalite.store import servers as records
from novalite.timeutil import parse_iso, utcnow

log = get_logger("novalite.conductor")

NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
SCHEDULE_EVENT = "conductor_migrate_server"
#: Steps run on the destination host (the others run on the source).
DEST_STEPS = (
    "finish_resize",
    "revert_resize",
    "pre_live_migration",
    "post_live_migration_at_destination",
    "evacuate",
)
LIVE_SCHEDULE_EVENT = "conductor_live_migrate_instance"
EVACUATE_SCHEDULE_EVENT = "conductor_rebuild_server"
#: What the recovery at start tells the user about a move the restart interrupted.
INTERRUPTED = "The move was interrupted by a restart of the controller."
#: The action event of each step (Nova's names).
STEP_EVENTS = {
    "resize_instance": "compute_resize_instance",
    "finish_resize": "compute_finish_resize",
    "confirm_resize": "compute_confirm_resize",
    "revert_resize": "compute_revert_resize",
    "finish_revert_resize": "compute_finish_revert_resize",
    "pre_live_migration": "compute_pre_live_migration",
    "live_migration": "compute_live_migration",
    "post_live_migration_at_destination": "compute_post_live_migration_at_destination",
    "evacuate": "compute_rebuild_instance",
}
#: The migration status each step's report is about (a report in any other is stale).
STEP_STATUS: dict[str, str | tuple[str, ...]] = {
    "resize_instance": "migrating",
    "finish_resize": "post-migrating",
    "confirm_resize": "confirming",
    "revert_resize": "reverting",
    "finish_revert_resize": "reverting",
    # A live migration aborted while the destination prepared (2.65) is ``cancelled``: the
    # destination's report then rolls it back.
    "pre_live_migration": ("preparing", "cancelled"),
    "live_migration": "running",
    "post_live_migration_at_destination": "post-migrating",
    "evacuate": "pre-migrating",
}


LIVE_STEPS = ("pre_live_migration", "live_migration", "post_live_migration_at_destination")


#: What an agent gets about a migration (plain JSON): one definition for the API and the conductor.
migration_payload = moves.agent_payload


def flavor_columns(flavor: dict[str, Any]) -> dict[str, Any]:
    """The instance columns that follow its flavor."""
    return {
        "flavor": flavor,
        "vcpus": int(flavor["vcpus"]),
        "memory_mb": int(flavor["memory_mb"]),
        "root_gb": int(flavor["root_gb"]),
        "ephemeral_gb": int(flavor.get("ephemeral_gb") or 0),
    }


def old_vm_state(row: Any) -> str:
    """The vm_state the server had before the move (kept in system_metadata by the API)."""
    return str((row.system_metadata or {}).get("old_vm_state") or states.ACTIVE)


class MoveTasks:
    """Resize, migration and evacuation steps the conductor drives or records."""

    rt: ControllerRuntime
    settings: Settings

    # -- the start of a move (from the API) ------------------------------------------------

    async def resize_instance(
        self, ctx: RequestContext, instance_uuid: str, migration_uuid: str, host: str | None = None
    ) -> None:
        """Schedule the move's destination and hand the server to its source host.

        Idempotent: a redelivered request for a migration that is no longer
        ``pre-migrating`` (or an instance that left ``resize_prep``) changes nothing.
        """
        require_controller(ctx, "start a move")
        with bind_request_id(ctx.request_id):
            started = utcnow()
            async with self.rt.db.connect() as conn:
                row = await records.get_instance(conn, instance_uuid)
                mig = await moves.get_migration(conn, migration_uuid)
            if row is None or mig is None or not self._move_starts(row, mig):
                log.info("conductor.stale_move_request", instance=instance_uuid, migration=migration_uuid)
                return
            same_host_ok = mig.migration_type == moves.RESIZE and self.settings.allow_resize_to_same_host
            spec = {
                "instance_uuid": migration_uuid,  # the claim's consumer until the swap below
                "project_id": row.project_id,
                "flavor": mig.new_flavor,
                "image": {"id": row.image_ref, **(row.image_meta or {})},
                "availability_zone": row.requested_az,
                "ignore_hosts": [] if same_host_ok else [mig.source_compute],
                "force_host": host,
            }
            try:
                dest = await self.rt.bus.call(
                    ctx, "scheduler", "select_destinations", spec=spec, timeout=self.settings.rpc_timeout
                )
            except RemoteError as exc:
                reason = NO_VALID_HOST if exc.exc_type == "NoValidHost" else f"Scheduling failed: {exc.message}"
                await self._no_destination(ctx, instance_uuid, migration_uuid, reason, started)
                return
            except CallTimeout:
                await self._no_destination(
                    ctx, instance_uuid, migration_uuid, "Scheduling timed out: no scheduler answered.", started
                )
                return
            await self._start_move(ctx, instance_uuid, migration_uuid, dest, started)

    @staticmethod
    def _move_starts(row: Any, mig: Any) -> bool:
        return (
            row is not None
            and mig is not None
            and not row.deleted
            and mig.status == "pre-migrating"
            and row.task_state == states.RESIZE_PREP
            and row.host == mig.source_compute
        )

    async def _start_move(
        self, ctx: RequestContext, instance_uuid: str, migration_uuid: str, dest: dict[str, Any], started: Any
    ) -> None:
        """Swap the claims and cast to the source, in one transaction (or give the claim back)."""
        async with self.rt.db.begin() as conn:
            row = await records.get_instance(conn, instance_uuid, lock=True)
            mig = await moves.get_migration(conn, migration_uuid, lock=True)
            if (
                row is None
                or mig is None
                or not self._move_starts(row, mig)
                or not await placement.swap_for_move(conn, instance_uuid, migration_uuid)
            ):
                # Deleted or changed while we scheduled: the destination's claim is ours to free.
                await placement.release(conn, migration_uuid)
                await moves.update_migration(conn, migration_uuid, status="error")
                log.info("conductor.move_gone_while_scheduling", instance=instance_uuid)
                return
            await moves.update_migration(
                conn, migration_uuid, status="migrating", dest_compute=dest["host"], dest_node=dest["node"]
            )
            await records.update_instance(
                conn,
                instance_uuid,
                expect={"task_state": states.RESIZE_PREP},
                task_state=states.RESIZE_MIGRATING,
                old_flavor=mig.old_flavor,
                new_flavor=mig.new_flavor,
            )
            await actions.record_event(
                conn,
                instance_uuid,
                ctx.request_id,
                SCHEDULE_EVENT,
                start_time=started,
                finish_time=utcnow(),
                result="Success",
            )
            mig = await moves.get_migration(conn, migration_uuid)
            assert mig is not None  # locked above
            payload = await records.payload_from_row(conn, row)
            await cast_after_commit(
                conn,
                ctx,
                f"compute.{mig.source_compute}",
                "resize_instance",
                instance=payload,
                migration=migration_payload(mig),
                flavor=mig.new_flavor,
            )
        log.info("conductor.move_started", instance=instance_uuid, source=mig.source_compute, dest=dest["host"])

    async def _no_destination(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        migration_uuid: str,
        reason: str,
        started: Any,
        task_state: str = states.RESIZE_PREP,
        status: str = "pre-migrating",
        event: str = SCHEDULE_EVENT,
    ) -> None:
        """Nova's: the server stays as it was (task cleared), the fault and the action's event
        say why; whatever a late claim took for the migration is freed."""
        async with self.rt.db.begin() as conn:
            await records.get_instance(conn, instance_uuid, lock=True)
            await moves.update_migration(conn, migration_uuid, expect_status=[status], status="error")
            await placement.release(conn, migration_uuid)
            # An evacuation's server goes to ERROR (Nova's rebuild_server), a migration's stays as it was.
            error = {"vm_state": states.ERROR} if event == EVACUATE_SCHEDULE_EVENT else {}
            cleared = await records.update_instance(
                conn, instance_uuid, expect={"task_state": task_state, "deleted": False}, task_state=None, **error
            )
            if cleared:
                await records.add_fault(conn, instance_uuid, reason, code=400)
            await actions.record_event(
                conn,
                instance_uuid,
                ctx.request_id,
                event,
                start_time=started,
                finish_time=utcnow(),
                result="Error",
                traceback=reason,
            )
            await actions.finish_action(conn, instance_uuid, ctx.request_id)
        log.warning("conductor.move_no_destination", instance=instance_uuid, reason=reason)

    # -- the steps on the hosts (from the agents) --------------------------------------------

    async def move_step(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        migration_uuid: str,
        host: str,
        step: str,
        start_time: str | None = None,
        power_state: int | None = None,
        error: str | None = None,
        traceback: str | None = None,
        aborted: bool = False,
        migrate_data: dict[str, Any] | None = None,
    ) -> bool:
        """Record one step's outcome and start the next, in one transaction. False for a stale
        report (the move ended or went on meanwhile): it changes nothing."""
        require_host(ctx, host, f"move_step {step}")
        handler = self._step_handlers().get(step)
        if handler is None:
            raise ValueError(f"unknown move step {step!r}")
        async with self.rt.db.begin() as conn:
            row = await records.get_instance(conn, instance_uuid, lock=True)
            mig = await moves.get_migration(conn, migration_uuid, lock=True)
            if row is None or mig is None or row.deleted or mig.instance_uuid != instance_uuid:
                if row is not None and mig is not None and row.deleted and step in LIVE_STEPS and mig.dest_compute:
                    # Deleted while it moved: what the destination prepared or received goes too.
                    payload = await records.payload_from_row(conn, row)
                    await cast_after_commit(
                        conn,
                        ctx,
                        f"compute.{mig.dest_compute}",
                        "rollback_live_migration_at_destination",
                        instance=payload,
                    )
                return False
            expected = mig.dest_compute if step in DEST_STEPS else mig.source_compute
            wanted = STEP_STATUS[step]
            if host != expected or mig.status not in ((wanted,) if isinstance(wanted, str) else wanted):
                log.info("conductor.stale_move_step", instance=instance_uuid, step=step, status=mig.status, host=host)
                return False
            event: dict[str, Any] = {
                "start_time": parse_iso(start_time) if start_time else None,
                "finish_time": utcnow(),
                "result": "Error" if error else "Success",
                "traceback": traceback or error,
                "host": host,
            }
            await actions.record_event(conn, instance_uuid, ctx.request_id, STEP_EVENTS[step], **event)
            if row.task_state == states.DELETING:
                await self._deleted_while_moving(conn, ctx, row, mig, step, error)
                return False
            if step in LIVE_STEPS:
                await handler(conn, ctx, row, mig, power_state, error, aborted=aborted, migrate_data=migrate_data)
            else:
                await handler(conn, ctx, row, mig, power_state, error)
        return True

    async def _deleted_while_moving(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, step: str, error: str | None
    ) -> None:
        """The user deleted the server during this step: the move ends here, and the delete
        (queued behind the step on the instance's host) finishes it. What the delete does
        not see is cleaned up now: the migration's claim, and the source's original guest."""
        await placement.release(conn, mig.uuid)
        await moves.update_migration(conn, mig.uuid, status="error")
        if step in LIVE_STEPS and mig.dest_compute:
            # The guest (or its copy) may be at the destination: the delete goes to the source.
            payload = await records.payload_from_row(conn, row)
            await cast_after_commit(
                conn, ctx, f"compute.{mig.dest_compute}", "rollback_live_migration_at_destination", instance=payload
            )
        elif step in ("finish_resize", "revert_resize") or (step == "resize_instance" and not error):
            payload = await records.payload_from_row(conn, row)
            await cast_after_commit(
                conn,
                ctx,
                f"compute.{mig.source_compute}",
                "confirm_resize",
                instance=payload,
                migration=migration_payload(mig),
            )
        log.info("conductor.move_ended_by_delete", instance=row.uuid, step=step)

    def _step_handlers(self) -> dict[str, Callable[..., Awaitable[None]]]:
        return {
            "resize_instance": self._source_done,
            "finish_resize": self._dest_done,
            "confirm_resize": self._confirmed,
            "revert_resize": self._dest_reverted,
            "finish_revert_resize": self._reverted,
            "pre_live_migration": self._live_prepared,
            "live_migration": self._live_copied,
            "post_live_migration_at_destination": self._live_finished,
            "evacuate": self._evacuated,
        }

    async def _fail_move(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, error: str, power_state: int | None, vm_state: str
    ) -> None:
        values: dict[str, Any] = {"vm_state": vm_state, "task_state": None, "old_flavor": None, "new_flavor": None}
        if power_state is not None:
            values["power_state"] = power_state
        await records.update_instance(conn, row.uuid, **values)
        await records.add_fault(conn, row.uuid, error, host=row.host)
        await moves.update_migration(conn, mig.uuid, status="error")
        await actions.finish_action(conn, row.uuid, ctx.request_id)
        log.warning("conductor.move_failed", instance=row.uuid, migration=mig.uuid, error=error)

    async def _source_done(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, power_state: int | None, error: str | None
    ) -> None:
        if error:
            # The driver left the guest on the source (its cleanup duty): the claims go back
            # as they were — the destination freed, the source the instance's again. The
            # server goes on as before if its guest is as it was, else ERROR.
            await placement.revert_move(conn, row.uuid, mig.uuid)
            before = old_vm_state(row)
            as_it_was = (before, power_state) in ((states.ACTIVE, 1), (states.STOPPED, 4))
            await self._fail_move(conn, ctx, row, mig, error, power_state, before if as_it_was else states.ERROR)
            return
        await records.update_instance(
            conn,
            row.uuid,
            host=mig.dest_compute,
            node=mig.dest_node,
            task_state=states.RESIZE_MIGRATED,
            **flavor_columns(mig.new_flavor),
        )
        await moves.update_migration(conn, mig.uuid, status="post-migrating")
        payload = await records.instance_payload(conn, row.uuid)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{mig.dest_compute}",
            "finish_resize",
            instance=payload,
            migration=migration_payload(mig),
            power_on=old_vm_state(row) != states.STOPPED,
        )

    async def _dest_done(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, power_state: int | None, error: str | None
    ) -> None:
        if error:
            # As Nova: the server is now the destination's (ERROR there, recoverable by a
            # hard reboot), so the source's claim (the migration's) is freed, and the source's
            # powered-off original is removed.
            await placement.release(conn, mig.uuid)
            await self._fail_move(conn, ctx, row, mig, error, power_state, states.ERROR)
            payload = await records.instance_payload(conn, row.uuid)
            await cast_after_commit(
                conn,
                ctx,
                f"compute.{mig.source_compute}",
                "confirm_resize",
                instance=payload,
                migration=migration_payload(mig),
            )
            return
        values: dict[str, Any] = {"vm_state": states.RESIZED, "task_state": None}
        if power_state is not None:
            values["power_state"] = power_state
        await records.update_instance(conn, row.uuid, **values)
        await moves.update_migration(conn, mig.uuid, status="finished")
        await actions.finish_action(conn, row.uuid, ctx.request_id)

    async def _confirmed(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, power_state: int | None, error: str | None
    ) -> None:
        await placement.release(conn, mig.uuid)  # the source's room, held since the move started
        if error:
            await self._fail_move(conn, ctx, row, mig, error, None, states.ERROR)
            return
        vm_state = states.ACTIVE if row.power_state == 1 else states.STOPPED
        await records.update_instance(
            conn, row.uuid, vm_state=vm_state, task_state=None, old_flavor=None, new_flavor=None
        )
        await moves.update_migration(conn, mig.uuid, status="confirmed")
        await actions.finish_action(conn, row.uuid, ctx.request_id)

    async def _dest_reverted(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, power_state: int | None, error: str | None
    ) -> None:
        if error:
            # The server stays at the destination (ERROR): the source's claim is freed.
            await placement.release(conn, mig.uuid)
            await self._fail_move(conn, ctx, row, mig, error, power_state, states.ERROR)
            return
        # The destination's guest is gone: its claim goes, the source's comes back to the instance.
        await placement.revert_move(conn, row.uuid, mig.uuid)
        await records.update_instance(
            conn, row.uuid, host=mig.source_compute, node=mig.source_node, **flavor_columns(mig.old_flavor)
        )
        payload = await records.instance_payload(conn, row.uuid)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{mig.source_compute}",
            "finish_revert_resize",
            instance=payload,
            migration=migration_payload(mig),
            power_on=old_vm_state(row) != states.STOPPED,
        )

    async def _reverted(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, power_state: int | None, error: str | None
    ) -> None:
        if error:
            await self._fail_move(conn, ctx, row, mig, error, power_state, states.ERROR)
            return
        values: dict[str, Any] = {
            "vm_state": old_vm_state(row),
            "task_state": None,
            "old_flavor": None,
            "new_flavor": None,
        }
        if power_state is not None:
            values["power_state"] = power_state
        await records.update_instance(conn, row.uuid, **values)
        await moves.update_migration(conn, mig.uuid, status="reverted")
        await actions.finish_action(conn, row.uuid, ctx.request_id)

    async def migration_transfer(
        self, ctx: RequestContext, instance_uuid: str, migration_uuid: str, host: str
    ) -> dict[str, str]:
        """The source of a cold move asks where to send its disks (novalite.agent.transfer): a
        one-time ticket for this migration, registered with the destination's agent, and the
        URL its receiver answered. Only the source, while the migration is ``migrating``."""
        require_host(ctx, host, "migration_transfer")
        async with self.rt.db.connect() as conn:
            row = await records.get_instance(conn, instance_uuid)
            mig = await moves.get_migration(conn, migration_uuid)
            if (
                row is None
                or mig is None
                or row.deleted
                or mig.instance_uuid != instance_uuid
                or mig.source_compute != host
                or mig.status != "migrating"
                or not mig.dest_compute
                or mig.dest_compute == host
            ):
                raise PermissionError(f"no move of instance {instance_uuid} from {host} is sending disks")
            payload = await records.payload_from_row(conn, row)
        ticket = secrets.token_urlsafe(32)
        try:
            target = await self.rt.bus.call(
                ctx,
                f"compute.{mig.dest_compute}",
                "expect_migration_files",
                instance=payload,
                migration=migration_payload(mig),
                ticket=ticket,
                timeout=self.settings.rpc_timeout,
            )
        except RemoteError as exc:
            raise RuntimeError(exc.message) from None  # the destination's reason, not wrapped twice
        return {"url": str(target["url"]), "ticket": ticket}

    # -- automatic confirm ------------------------------------------------------------------

    async def _confirm_resizes_loop(self) -> None:
        """Confirm resizes older than ``resize_confirm_window`` (never when it is 0)."""
        if not self.settings.resize_confirm_window:
            return
        interval = max(0.5, min(self.settings.report_interval, 30.0, self.settings.resize_confirm_window / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.confirm_old_resizes()
            except Exception:
                log.exception("conductor.auto_confirm_failed")

    async def confirm_old_resizes(self, ctx: RequestContext | None = None) -> list[str]:
        """Start the confirm of each resize left in VERIFY_RESIZE past the window (Nova's
        ``_poll_unconfirmed_resizes``); returns the instances. A source host that is down
        is skipped (tried again next time)."""
        if ctx is not None:
            require_controller(ctx, "confirm resizes")
        window = self.settings.resize_confirm_window
        if not window:
            return []
        async with self.rt.db.connect() as conn:
            old = await moves.unconfirmed_before(conn, utcnow() - timedelta(seconds=window))
        started = []
        for mig in old:
            own = RequestContext.admin()
            async with self.rt.db.begin() as conn:
                row = await records.get_instance(conn, mig.instance_uuid, lock=True)
                if row is None or row.deleted or row.vm_state != states.RESIZED or row.task_state is not None:
                    continue
                if not await records.compute_host_is_up(conn, mig.source_compute, self.settings.service_down_time):
                    continue
                if not await moves.update_migration(conn, mig.uuid, expect_status=["finished"], status="confirming"):
                    continue
                await actions.start_action(conn, row.uuid, "confirmResize", own.request_id, row.user_id, row.project_id)
                payload = await records.payload_from_row(conn, row)
                await cast_after_commit(
                    conn,
                    own,
                    f"compute.{mig.source_compute}",
                    "confirm_resize",
                    instance=payload,
                    migration=migration_payload(mig),
                )
            started.append(row.uuid)
            log.info("conductor.resize_auto_confirmed", instance=row.uuid, migration=mig.uuid)
        return started

    # -- live migration (issue 10, second half) ---------------------------------------------

    async def _schedule_move(
        self, ctx: RequestContext, row: Any, mig: Any, flavor: dict[str, Any], host: str | None
    ) -> dict[str, Any] | str:
        """A destination claimed for the migration's uuid (another host than the source), or
        the reason there is none."""
        spec = {
            "instance_uuid": mig.uuid,
            "project_id": row.project_id,
            "flavor": flavor,
            "image": {"id": row.image_ref, **(row.image_meta or {})},
            "availability_zone": row.requested_az,
            "ignore_hosts": [mig.source_compute],
            "force_host": host,
        }
        try:
            dest: dict[str, Any] = await self.rt.bus.call(
                ctx, "scheduler", "select_destinations", spec=spec, timeout=self.settings.rpc_timeout
            )
        except RemoteError as exc:
            return NO_VALID_HOST if exc.exc_type == "NoValidHost" else f"Scheduling failed: {exc.message}"
        except CallTimeout:
            return "Scheduling timed out: no scheduler answered."
        return dest

    @staticmethod
    def _accepted(row: Any, mig: Any, task_state: str) -> bool:
        return (
            row is not None
            and mig is not None
            and not row.deleted
            and mig.status == "accepted"
            and row.task_state == task_state
            and row.host == mig.source_compute
        )

    async def live_migrate_instance(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        migration_uuid: str,
        host: str | None = None,
        block_migration: bool | None = None,
    ) -> None:
        """Schedule a live migration's destination, move the claims (as a cold migration's)
        and ask the destination to check and prepare. Idempotent (a stale request is dropped)."""
        require_controller(ctx, "start a live migration")
        with bind_request_id(ctx.request_id):
            started = utcnow()
            async with self.rt.db.connect() as conn:
                row = await records.get_instance(conn, instance_uuid)
                mig = await moves.get_migration(conn, migration_uuid)
            if row is None or mig is None or not self._accepted(row, mig, states.MIGRATING):
                log.info("conductor.stale_live_migration", instance=instance_uuid, migration=migration_uuid)
                return
            dest = await self._schedule_move(ctx, row, mig, dict(row.flavor), host)
            if isinstance(dest, str):
                await self._no_destination(
                    ctx, instance_uuid, migration_uuid, dest, started, states.MIGRATING, "accepted", LIVE_SCHEDULE_EVENT
                )
                return
            async with self.rt.db.begin() as conn:
                row = await records.get_instance(conn, instance_uuid, lock=True)
                mig = await moves.get_migration(conn, migration_uuid, lock=True)
                if not self._accepted(row, mig, states.MIGRATING) or not await placement.swap_for_move(
                    conn, instance_uuid, migration_uuid
                ):
                    await placement.release(conn, migration_uuid)
                    await moves.update_migration(conn, migration_uuid, status="error")
                    return
                await moves.update_migration(
                    conn, migration_uuid, status="preparing", dest_compute=dest["host"], dest_node=dest["node"]
                )
                await actions.record_event(
                    conn,
                    instance_uuid,
                    ctx.request_id,
                    LIVE_SCHEDULE_EVENT,
                    start_time=started,
                    finish_time=utcnow(),
                    result="Success",
                )
                mig = await moves.get_migration(conn, migration_uuid)
                payload = await records.payload_from_row(conn, row)
                await cast_after_commit(
                    conn,
                    ctx,
                    f"compute.{dest['host']}",
                    "pre_live_migration",
                    instance=payload,
                    migration=migration_payload(mig),
                    block_migration=block_migration,
                )
            log.info("conductor.live_migration_started", instance=instance_uuid, dest=dest["host"])

    async def _live_rollback(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, error: str | None, aborted: bool
    ) -> None:
        """The guest goes on running on the source: the claims go back as they were, the
        destination undoes its preparation; ``error`` (a fault) or ``cancelled`` (an abort)."""
        await placement.revert_move(conn, row.uuid, mig.uuid)
        await records.update_instance(conn, row.uuid, host=mig.source_compute, node=mig.source_node, task_state=None)
        status = "cancelled" if aborted else "error"
        await moves.update_migration(conn, mig.uuid, status=status)
        if not aborted:
            await records.add_fault(conn, row.uuid, error or "Live migration failed.", host=mig.source_compute)
        await actions.finish_action(conn, row.uuid, ctx.request_id)
        payload = await records.instance_payload(conn, row.uuid)
        await cast_after_commit(
            conn, ctx, f"compute.{mig.dest_compute}", "rollback_live_migration_at_destination", instance=payload
        )
        log.warning("conductor.live_migration_rolled_back", instance=row.uuid, status=status, error=error)

    async def _live_prepared(
        self,
        conn: Any,
        ctx: RequestContext,
        row: Any,
        mig: Any,
        power_state: int | None,
        error: str | None,
        aborted: bool = False,
        migrate_data: dict[str, Any] | None = None,
    ) -> None:
        if error or mig.status == "cancelled":
            await self._live_rollback(conn, ctx, row, mig, error, aborted=mig.status == "cancelled")
            return
        await moves.update_migration(conn, mig.uuid, expect_status=["preparing"], status="running")
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{mig.source_compute}",
            "live_migration",
            instance=payload,
            migration=migration_payload(mig),
            migrate_data=migrate_data or {},
        )

    async def _live_copied(
        self,
        conn: Any,
        ctx: RequestContext,
        row: Any,
        mig: Any,
        power_state: int | None,
        error: str | None,
        aborted: bool = False,
        migrate_data: dict[str, Any] | None = None,
    ) -> None:
        if error:
            await self._live_rollback(conn, ctx, row, mig, error, aborted=aborted)
            return
        await records.update_instance(conn, row.uuid, host=mig.dest_compute, node=mig.dest_node, progress=100)
        await moves.update_migration(conn, mig.uuid, status="post-migrating")
        payload = await records.instance_payload(conn, row.uuid)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{mig.dest_compute}",
            "post_live_migration_at_destination",
            instance=payload,
            migration=migration_payload(mig),
        )

    async def _live_finished(
        self,
        conn: Any,
        ctx: RequestContext,
        row: Any,
        mig: Any,
        power_state: int | None,
        error: str | None,
        aborted: bool = False,
        migrate_data: dict[str, Any] | None = None,
    ) -> None:
        """The guest is the destination's: the source's claim (the migration's) is freed."""
        await placement.release(conn, mig.uuid)
        values: dict[str, Any] = {"task_state": None}
        if power_state is not None:
            values["power_state"] = power_state
        if error:
            values["vm_state"] = states.ERROR
            await records.add_fault(conn, row.uuid, error, host=mig.dest_compute)
        await records.update_instance(conn, row.uuid, **values)
        await moves.update_migration(conn, mig.uuid, status="error" if error else "completed")
        await actions.finish_action(conn, row.uuid, ctx.request_id)
        log.info("conductor.live_migration_done", instance=row.uuid, dest=mig.dest_compute, error=error)

    async def live_migration_progress(
        self, ctx: RequestContext, instance_uuid: str, migration_uuid: str, host: str, progress: dict[str, int]
    ) -> bool:
        """The source's progress report while it copies: shown in the migration (memory and
        disk bytes) and the server's ``progress`` (percent of memory sent)."""
        require_host(ctx, host, "live_migration_progress")
        # The columns are 32-bit integers (Nova's are 64-bit): a guest above 2 GiB shows the cap.
        fields = {k: min(int(v), moves.PROGRESS_MAX) for k, v in progress.items() if k in moves.PROGRESS_FIELDS}
        async with self.rt.db.begin() as conn:
            mig = await moves.get_migration(conn, migration_uuid)
            if mig is None or mig.source_compute != host or mig.instance_uuid != instance_uuid:
                return False
            if not await moves.update_migration(conn, migration_uuid, expect_status=["running"], **fields):
                return False
            total = int(progress.get("memory_total") or 0)
            if total:
                percent = min(99, int(int(progress.get("memory_processed") or 0) * 100 / total))
                await records.update_instance(conn, instance_uuid, progress=percent)
        return True

    # -- evacuation -------------------------------------------------------------------------

    async def evacuate_instance(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        migration_uuid: str,
        host: str | None = None,
        target_state: str | None = None,
    ) -> None:
        """Schedule another host for a server whose host is down, move the claims (the
        source's stays with the migration until the dead host's agent has cleaned up) and
        have the destination rebuild it from its image."""
        require_controller(ctx, "evacuate")
        with bind_request_id(ctx.request_id):
            started = utcnow()
            async with self.rt.db.connect() as conn:
                row = await records.get_instance(conn, instance_uuid)
                mig = await moves.get_migration(conn, migration_uuid)
            if row is None or mig is None or not self._accepted(row, mig, states.REBUILDING):
                log.info("conductor.stale_evacuation", instance=instance_uuid, migration=migration_uuid)
                return
            dest = await self._schedule_move(ctx, row, mig, dict(row.flavor), host)
            if isinstance(dest, str):
                await self._no_destination(
                    ctx,
                    instance_uuid,
                    migration_uuid,
                    dest,
                    started,
                    states.REBUILDING,
                    "accepted",
                    EVACUATE_SCHEDULE_EVENT,
                )
                return
            async with self.rt.db.begin() as conn:
                row = await records.get_instance(conn, instance_uuid, lock=True)
                mig = await moves.get_migration(conn, migration_uuid, lock=True)
                if not self._accepted(row, mig, states.REBUILDING) or not await placement.swap_for_move(
                    conn, instance_uuid, migration_uuid
                ):
                    await placement.release(conn, migration_uuid)
                    await moves.update_migration(conn, migration_uuid, status="error")
                    return
                assert row is not None  # checked by _accepted
                was_stopped = row.vm_state == states.STOPPED
                await moves.update_migration(
                    conn, migration_uuid, status="pre-migrating", dest_compute=dest["host"], dest_node=dest["node"]
                )
                await records.update_instance(
                    conn, instance_uuid, host=dest["host"], node=dest["node"], task_state=states.REBUILD_SPAWNING
                )
                await actions.record_event(
                    conn,
                    instance_uuid,
                    ctx.request_id,
                    EVACUATE_SCHEDULE_EVENT,
                    start_time=started,
                    finish_time=utcnow(),
                    result="Success",
                )
                mig = await moves.get_migration(conn, migration_uuid)
                payload = await records.instance_payload(conn, instance_uuid)
                await cast_after_commit(
                    conn,
                    ctx,
                    f"compute.{dest['host']}",
                    "rebuild_evacuated_instance",
                    instance=payload,
                    migration=migration_payload(mig),
                    power_on=target_state != states.STOPPED and not was_stopped,
                )
            log.info("conductor.evacuation_started", instance=instance_uuid, dest=dest["host"])

    async def _evacuated(
        self, conn: Any, ctx: RequestContext, row: Any, mig: Any, power_state: int | None, error: str | None
    ) -> None:
        if error:
            # Nothing runs on the destination (the driver's cleanup duty): its claim goes, the
            # server is the dead host's again, in ERROR, and may be evacuated again.
            await placement.revert_move(conn, row.uuid, mig.uuid)
            await records.update_instance(
                conn, row.uuid, host=mig.source_compute, node=mig.source_node, vm_state=states.ERROR, task_state=None
            )
            await records.add_fault(conn, row.uuid, error, host=mig.dest_compute)
            await moves.update_migration(conn, mig.uuid, status="failed")
            await actions.finish_action(conn, row.uuid, ctx.request_id)
            return
        stopped = power_state is not None and power_state != 1
        values: dict[str, Any] = {
            "vm_state": states.STOPPED if stopped else states.ACTIVE,
            "task_state": None,
            "launched_at": utcnow(),
        }
        if power_state is not None:
            values["power_state"] = power_state
        await records.update_instance(conn, row.uuid, **values)
        await moves.update_migration(conn, mig.uuid, status="done")  # the source claim stays: see above
        await actions.finish_action(conn, row.uuid, ctx.request_id)

    async def evacuated_instances(self, ctx: RequestContext, host: str) -> list[dict[str, Any]]:
        """For the agent of a host that comes back: the guests it must remove, those of
        servers evacuated away from it (now on another host, or deleted)."""
        require_host(ctx, host, "evacuated_instances")
        out = []
        async with self.rt.db.connect() as conn:
            for mig in await moves.evacuated_from(conn, host):
                row = await records.get_instance(conn, mig.instance_uuid)
                if row is not None and not row.deleted and row.host == host:
                    continue  # back on this host (never remove the server's own guest)
                payload = await records.payload_from_row(conn, row) if row is not None else {"uuid": mig.instance_uuid}
                out.append({"instance": payload, "migration": migration_payload(mig)})
        return out

    async def evacuation_cleaned(self, ctx: RequestContext, host: str, migration_uuid: str) -> bool:
        """The old host removed the evacuated server's guest: its claim there is freed and
        the evacuation is ``completed``."""
        require_host(ctx, host, "evacuation_cleaned")
        async with self.rt.db.begin() as conn:
            mig = await moves.get_migration(conn, migration_uuid, lock=True)
            if mig is None or mig.source_compute != host or mig.migration_type != moves.EVACUATION:
                return False
            if not await moves.update_migration(conn, migration_uuid, expect_status=["done"], status="completed"):
                return False
            await placement.release(conn, migration_uuid)
        log.info("conductor.evacuation_cleaned", host=host, migration=migration_uuid)
        return True

    # -- recovery at start (all-in-one, in-process bus) -------------------------------------

    async def recover_moves(self, ctx: RequestContext) -> int:
        """End moves whose messages died with this process (at start, in-process bus only, as
        :meth:`recover_builds`), so that the API tells the truth within seconds: a move that
        had not left its source goes back there (claims restored; ACTIVE, or as it was), one
        half-done on the destination ends there in ERROR with a fault, a confirm or revert
        is sent again (those steps are idempotent), a live migration whose copy finished is
        finished. A move with a message still in the outbox is left to it. Returns the count."""
        require_controller(ctx, "recover moves")
        async with self.rt.db.connect() as conn:
            pending = await moves.interrupted(conn)
        count = 0
        for seen in pending:
            async with self.rt.db.begin() as conn:
                row = await records.get_instance(conn, seen.instance_uuid, lock=True)
                mig = await moves.get_migration(conn, seen.uuid, lock=True)
                if row is None or mig is None or row.deleted or await moves.outbox_mentions(conn, row.uuid):
                    continue
                if await self._recover_move(conn, ctx, row, mig):
                    count += 1
                    log.warning("conductor.move_recovered", instance=row.uuid, migration=mig.uuid, status=mig.status)
        return count

    async def _recover_move(self, conn: Any, ctx: RequestContext, row: Any, mig: Any) -> bool:
        status, kind = mig.status, mig.migration_type
        if status in ("accepted", "pre-migrating") and (kind != moves.EVACUATION or status == "accepted"):
            # Not scheduled yet (or its claim not swapped): nothing moved.
            await placement.release(conn, mig.uuid)
            before = old_vm_state(row) if kind in (moves.RESIZE, moves.MIGRATION) else row.vm_state
            await self._end_recovered(conn, row, mig, "error", back_to_source=True, vm_state=before)
            return True
        if kind == moves.LIVE_MIGRATION:
            if status == "post-migrating":
                payload = await records.payload_from_row(conn, row)
                await cast_after_commit(
                    conn,
                    ctx,
                    f"compute.{mig.dest_compute}",
                    "post_live_migration_at_destination",
                    instance=payload,
                    migration=migration_payload(mig),
                )
                return True
            await placement.revert_move(conn, row.uuid, mig.uuid)
            ended = "cancelled" if status == "cancelled" else "error"
            await self._end_recovered(conn, row, mig, ended, host=mig.source_compute, node=mig.source_node)
            back = await records.instance_payload(conn, row.uuid)
            await cast_after_commit(
                conn, ctx, f"compute.{mig.dest_compute}", "rollback_live_migration_at_destination", instance=back
            )
            return True
        if kind == moves.EVACUATION or status == "post-migrating":
            # The destination was building the server: it is the destination's, in ERROR (a
            # hard reboot or another evacuation recovers it); the source's claim goes with the
            # original guest, except an evacuation's (the dead host's agent cleans up).
            if kind != moves.EVACUATION:
                await placement.release(conn, mig.uuid)
                payload = await records.payload_from_row(conn, row)
                await cast_after_commit(
                    conn,
                    ctx,
                    f"compute.{mig.source_compute}",
                    "confirm_resize",
                    instance=payload,
                    migration=migration_payload(mig),
                )
            else:
                await placement.revert_move(conn, row.uuid, mig.uuid)
                await records.update_instance(conn, row.uuid, host=mig.source_compute, node=mig.source_node)
            failed = "failed" if kind == moves.EVACUATION else "error"
            await self._end_recovered(conn, row, mig, failed, vm_state=states.ERROR)
            return True
        if status == "migrating":
            await placement.revert_move(conn, row.uuid, mig.uuid)
            await self._end_recovered(conn, row, mig, "error", back_to_source=True, vm_state=old_vm_state(row))
            return True
        payload = await records.payload_from_row(conn, row)
        if status == "confirming":
            topic, method = f"compute.{mig.source_compute}", "confirm_resize"
        elif row.host == mig.dest_compute:  # reverting, the destination's guest not yet gone
            topic, method = f"compute.{mig.dest_compute}", "revert_resize"
        else:
            topic, method = f"compute.{mig.source_compute}", "finish_revert_resize"
        await cast_after_commit(conn, ctx, topic, method, instance=payload, migration=migration_payload(mig))
        return True

    async def _end_recovered(
        self, conn: Any, row: Any, mig: Any, status: str, back_to_source: bool = False, **values: Any
    ) -> None:
        """End the recovered move: the task cleared (and ``values``), the fault, the status;
        ``back_to_source``: a resize that never left its source keeps its old flavor."""
        if back_to_source and mig.migration_type in (moves.RESIZE, moves.MIGRATION):
            values.update(flavor_columns(mig.old_flavor))
        if mig.migration_type == moves.LIVE_MIGRATION:
            values.setdefault("progress", 0)
        await records.update_instance(conn, row.uuid, task_state=None, old_flavor=None, new_flavor=None, **values)
        await records.add_fault(conn, row.uuid, INTERRUPTED, host=values.get("host") or row.host)
        await moves.update_migration(conn, mig.uuid, status=status)
