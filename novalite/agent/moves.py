"""The compute agent's half of moving servers (issue 10): a mixin of
:class:`~novalite.agent.manager.ComputeAgent`, served on ``compute.<host>``.

A resize or cold migration, as Nova's compute manager runs it:

1. source ``resize_instance``: the driver powers the guest off and names the files of its
   disks (``migrate_disk_and_power_off``); to another host the agent streams them to the
   destination's agent (:mod:`novalite.agent.transfer`: the conductor's ``migration_transfer``
   gives a one-time ticket and the destination's receiver URL, which the destination
   answered to ``expect_migration_files``); if they cannot be sent the driver brings the
   guest back (``finish_revert_migration``) and the step fails. The conductor then points
   the instance at the destination and casts ``finish_resize`` there;
2. destination ``finish_resize``: the driver creates and starts the guest with the new
   flavor (``finish_migration``); the server is VERIFY_RESIZE;
3. source ``confirm_resize`` (the original goes: ``confirm_migration``), or destination
   ``revert_resize`` (the new guest is destroyed) then source ``finish_revert_resize``
   (the original comes back: ``finish_revert_migration``).

A live migration: destination ``pre_live_migration`` (check and prepare), source
``live_migration`` (copy while it runs, with progress; abort and force complete act on it),
destination ``post_live_migration_at_destination`` — or ``rollback_live_migration_at_destination``.
An evacuation: destination ``rebuild_evacuated_instance`` (a spawn from the image); the dead
host removes its old guest at start (``destroy_evacuated_guests``, from ``reconcile``).

Every step reports to the conductor (``move_step``), which owns the records and the claims.
No database here either (the agent's import contract covers this module)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import traceback as tb
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from novalite_drivers.base import (
    ComputeDriver,
    DriverError,
    Instance,
    InstanceNotFound,
    LiveMigrationProgress,
    MigrationAborted,
    PowerState,
)

from novalite import states
from novalite.agent.transfer import TransferReceiver, send_files
from novalite.bus import BusError, RemoteError
from novalite.context import RequestContext
from novalite.log import get_logger
from novalite.runtime import Runtime

log = get_logger("novalite.compute")

#: How often a step's report is tried while the conductor is unreachable (it ends the step).
REPORT_ATTEMPTS = 5


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"


class MoveOperations:
    """Resize / migration operations run on the source or destination host."""

    rt: Runtime
    host: str
    driver: ComputeDriver
    _lock: Callable[[str], asyncio.Lock]
    _conductor: Callable[..., Awaitable[Any]]
    prepare_image: Callable[..., Awaitable[None]]
    #: The receiver of cold moves' disks (started when the first transfer is expected).
    _receiver: TransferReceiver | None = None

    async def _power_of(self, inst: Instance) -> int:
        try:
            return int(await self.driver.get_power_state(inst))
        except DriverError:
            return int(PowerState.NOSTATE)

    async def _step(
        self,
        ctx: RequestContext,
        step: str,
        instance: dict[str, Any],
        migration: dict[str, Any],
        work: Callable[[Instance], Awaitable[None]],
    ) -> None:
        """Run one step's driver work under the instance's lock and report it to the conductor
        (``move_step``: Success, or Error with the message and traceback)."""
        uuid = instance["uuid"]
        started = _now()
        t0 = time.perf_counter()
        async with self._lock(uuid):
            inst = Instance.from_dict(instance)
            report: dict[str, Any] = {"power_state": None, "error": None, "traceback": None}
            try:
                await work(inst)
            except Exception as exc:
                log.warning("compute.move_step_failed", instance=uuid, step=step, error=_message(exc))
                report["error"] = _message(exc)
                report["traceback"] = "".join(tb.format_exception(exc))
                with contextlib.suppress(Exception):
                    report["power_state"] = int(await self.driver.get_power_state(inst))
            else:
                if step in ("finish_resize", "finish_revert_resize"):
                    report["power_state"] = await self._power_of(inst)
            await self._report_step(ctx, uuid, migration["uuid"], step, started, report)
        log.info("compute.move_step_done", instance=uuid, step=step, ms=round((time.perf_counter() - t0) * 1000, 1))

    async def _report_step(
        self, ctx: RequestContext, uuid: str, migration_uuid: str, step: str, started: str, report: dict[str, Any]
    ) -> None:
        delay = 0.5
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                await self._conductor(
                    ctx,
                    "move_step",
                    instance_uuid=uuid,
                    migration_uuid=migration_uuid,
                    host=self.host,
                    step=step,
                    start_time=started,
                    **report,
                )
                return
            except BusError as exc:
                if attempt == REPORT_ATTEMPTS:
                    log.error("compute.move_report_lost", instance=uuid, step=step, error=str(exc))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- bus methods (casts from the conductor and the API) -------------------------------

    async def resize_instance(
        self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any], flavor: dict[str, Any]
    ) -> None:
        """Source host: power off and send the disks to the destination."""

        async def work(inst: Instance) -> None:
            running = await self._power_of(inst) == int(PowerState.RUNNING)
            files = await self.driver.migrate_disk_and_power_off(inst, migration["dest_compute"], flavor)
            if not files or migration["dest_compute"] == self.host:
                return
            try:
                try:
                    target = await self._conductor(
                        ctx,
                        "migration_transfer",
                        instance_uuid=inst.uuid,
                        migration_uuid=migration["uuid"],
                        host=self.host,
                    )
                except RemoteError as exc:
                    raise DriverError(f"{migration['dest_compute']} cannot take the disks: {exc.message}") from None
                t0 = time.perf_counter()
                sent = await send_files(str(target["url"]), str(target["ticket"]), list(files))
                log.info(
                    "compute.move_disks_sent",
                    instance=inst.uuid,
                    dest=migration["dest_compute"],
                    bytes=sent,
                    s=round(time.perf_counter() - t0, 2),
                )
            except Exception:
                # The move fails on the source: the guest comes back as it was (the driver's
                # files of the move go with it), so the server goes on here.
                try:
                    await self.driver.finish_revert_migration(inst, power_on=running)
                except Exception as exc:
                    log.error("compute.move_restore_failed", instance=inst.uuid, error=_message(exc))
                raise

        await self._step(ctx, "resize_instance", instance, migration, work)

    def _transfer_receiver(self) -> TransferReceiver:
        receiver = self._receiver
        if receiver is None:
            settings = self.rt.settings
            receiver = TransferReceiver(settings.migration_listen, settings.migration_address)
            self._receiver = receiver
        return receiver

    async def _close_transfers(self) -> None:
        """At agent stop: the receiver stops listening (transfers still expected are dropped)."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await receiver.close()

    async def expect_migration_files(
        self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any], ticket: str
    ) -> dict[str, str]:
        """Destination host (a call from the conductor, for the source's agent): get ready to
        receive a cold move's files with ``ticket``; answers the receiver's URL."""
        if migration.get("dest_compute") != self.host:
            raise PermissionError(f"migration {migration.get('uuid')} does not go to {self.host}")
        inst = Instance.from_dict(instance)
        inbox = await self.driver.receive_migration(inst, str(migration["source_compute"]))
        url = await self._transfer_receiver().expect(str(migration["uuid"]), inst.uuid, ticket, inbox)
        log.info("compute.move_disks_expected", instance=inst.uuid, source=migration["source_compute"])
        return {"url": url}

    async def finish_resize(
        self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any], power_on: bool = True
    ) -> None:
        """Destination host: create the guest with the new flavor (started unless it was off)."""

        async def work(inst: Instance) -> None:
            await self._conductor(
                ctx, "instance_update", instance_uuid=inst.uuid, values={"task_state": states.RESIZE_FINISH}
            )
            await self.driver.finish_migration(inst, migration["source_compute"], power_on=power_on)

        await self._step(ctx, "finish_resize", instance, migration, work)

    async def confirm_resize(self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any]) -> None:
        """Source host: the move is confirmed, remove the original guest."""
        await self._step(ctx, "confirm_resize", instance, migration, self.driver.confirm_migration)

    async def clean_resize_source(
        self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any]
    ) -> None:
        """Source host: the server was deleted while it waited in VERIFY_RESIZE; remove the
        original guest and the disks kept for a revert (what a confirm removes).

        Nothing is reported: the delete ends the move (its migration is marked ``error``
        and its claims freed with the instance). Idempotent: nothing left is fine.
        """
        async with self._lock(instance["uuid"]):
            inst = Instance.from_dict(instance)
            try:
                await self.driver.confirm_migration(inst)
            except InstanceNotFound:
                pass
            except Exception as exc:
                log.warning("compute.resize_source_cleanup_failed", instance=inst.uuid, error=_message(exc))
                return
        log.info("compute.resize_source_cleaned", instance=instance["uuid"], migration=migration["uuid"])

    async def revert_resize(self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any]) -> None:
        """Destination host: destroy the resized guest; the conductor then sends the server back."""

        async def work(inst: Instance) -> None:
            with contextlib.suppress(InstanceNotFound):
                await self.driver.destroy(inst)

        await self._step(ctx, "revert_resize", instance, migration, work)

    async def finish_revert_resize(
        self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any], power_on: bool = True
    ) -> None:
        """Source host: bring the original guest back with the old flavor."""

        async def work(inst: Instance) -> None:
            await self.driver.finish_revert_migration(inst, power_on=power_on)

        await self._step(ctx, "finish_revert_resize", instance, migration, work)

    # -- live migration (issue 10, second half) ---------------------------------------------

    async def _live_step(
        self,
        ctx: RequestContext,
        step: str,
        instance: dict[str, Any],
        migration: dict[str, Any],
        work: Callable[[Instance], Awaitable[dict[str, Any] | None]],
        lock: bool = True,
    ) -> None:
        """Run one live migration step and report it (``move_step``), with the migrate data
        the step returns, and whether it ended because it was aborted."""
        uuid = instance["uuid"]
        started = _now()
        report: dict[str, Any] = {"power_state": None, "error": None, "traceback": None}
        inst = Instance.from_dict(instance)
        async with self._lock(uuid) if lock else contextlib.nullcontext():
            try:
                data = await work(inst)
                if data is not None:
                    report["migrate_data"] = data
                if step == "post_live_migration_at_destination":
                    report["power_state"] = await self._power_of(inst)
            except MigrationAborted as exc:
                log.info("compute.live_migration_aborted", instance=uuid)
                report["error"], report["aborted"] = _message(exc), True
            except Exception as exc:
                log.warning("compute.move_step_failed", instance=uuid, step=step, error=_message(exc))
                report["error"] = _message(exc)
                report["traceback"] = "".join(tb.format_exception(exc))
            await self._report_step(ctx, uuid, migration["uuid"], step, started, report)

    async def pre_live_migration(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        migration: dict[str, Any],
        block_migration: bool | None = None,
    ) -> None:
        """Destination host: check that it can take the guest, and prepare for it."""

        async def work(inst: Instance) -> dict[str, Any]:
            source = migration["source_compute"]
            data = await self.driver.check_can_live_migrate_destination(inst, source, block_migration)
            if self.driver.needs_image_file and inst.image is not None:
                # Kernel copies and the root disk's size come from the image, when this host
                # has it (cached, or allowed to fetch it); the driver copes without.
                try:
                    await self.prepare_image(ctx, inst)
                except Exception as exc:
                    log.info("compute.live_migration_image_unavailable", instance=inst.uuid, error=_message(exc))
            await self.driver.pre_live_migration(inst, source, data)
            return data

        await self._live_step(ctx, "pre_live_migration", instance, migration, work)

    async def live_migration(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        migration: dict[str, Any],
        migrate_data: dict[str, Any] | None = None,
    ) -> None:
        """Source host: copy the running guest to the destination, reporting progress."""

        async def progress(p: LiveMigrationProgress) -> None:
            with contextlib.suppress(BusError):
                await self._conductor(
                    ctx,
                    "live_migration_progress",
                    instance_uuid=instance["uuid"],
                    migration_uuid=migration["uuid"],
                    host=self.host,
                    progress=dataclasses.asdict(p),
                )

        async def work(inst: Instance) -> None:
            await self.driver.live_migration(inst, migration["dest_compute"], migrate_data or {}, progress)

        await self._live_step(ctx, "live_migration", instance, migration, work)

    async def post_live_migration_at_destination(
        self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any]
    ) -> None:
        """Destination host: the guest is ours now."""

        async def work(inst: Instance) -> None:
            await self.driver.post_live_migration_at_destination(inst, migration["source_compute"])

        await self._live_step(ctx, "post_live_migration_at_destination", instance, migration, work)

    async def rollback_live_migration_at_destination(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """Destination host: the move failed or was aborted, undo the preparation (no report:
        the conductor already put the server back on its source)."""
        async with self._lock(instance["uuid"]):
            try:
                await self.driver.rollback_live_migration_at_destination(Instance.from_dict(instance))
            except Exception as exc:
                log.warning("compute.live_rollback_failed", instance=instance["uuid"], error=_message(exc))

    async def live_migration_abort(self, ctx: RequestContext, instance: dict[str, Any], migration_id: int) -> None:
        """Source host: abort the running copy (not under the instance's lock: the copy holds it)."""
        try:
            await self.driver.live_migration_abort(Instance.from_dict(instance))
        except DriverError as exc:
            log.warning("compute.live_abort_failed", instance=instance["uuid"], error=_message(exc))

    async def live_migration_force_complete(
        self, ctx: RequestContext, instance: dict[str, Any], migration_id: int
    ) -> None:
        """Source host: make the running copy converge now."""
        try:
            await self.driver.live_migration_force_complete(Instance.from_dict(instance))
        except DriverError as exc:
            log.warning("compute.live_force_complete_failed", instance=instance["uuid"], error=_message(exc))

    # -- evacuation -------------------------------------------------------------------------

    async def rebuild_evacuated_instance(
        self, ctx: RequestContext, instance: dict[str, Any], migration: dict[str, Any], power_on: bool = True
    ) -> None:
        """Destination host: rebuild the evacuated server from its image (its disks died with
        its host, no shared storage assumed), stopped if it was (or if 2.95 asked)."""

        async def work(inst: Instance) -> None:
            if inst.uuid in set(await self.driver.list_instances()):
                # What an interrupted evacuation to this host left (the server lives nowhere
                # here: this host is never the one it is evacuated from): start clean.
                log.warning("compute.interrupted_evacuation_cleanup", instance=inst.uuid)
                await self.driver.destroy(inst)
            if self.driver.needs_image_file and inst.image is not None:
                await self.prepare_image(ctx, inst)
            try:
                await self.driver.spawn(inst)
            except Exception:
                with contextlib.suppress(Exception):
                    await self.driver.destroy(inst)
                raise
            if not power_on:
                await self.driver.power_off(inst)

        await self._evacuate_step(ctx, instance, migration, work)

    async def _evacuate_step(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        migration: dict[str, Any],
        work: Callable[[Instance], Awaitable[None]],
    ) -> None:
        uuid = instance["uuid"]
        started = _now()
        report: dict[str, Any] = {"power_state": None, "error": None, "traceback": None}
        async with self._lock(uuid):
            inst = Instance.from_dict(instance)
            try:
                await work(inst)
                report["power_state"] = await self._power_of(inst)
            except Exception as exc:
                log.warning("compute.evacuation_failed", instance=uuid, error=_message(exc))
                report["error"] = _message(exc)
                report["traceback"] = "".join(tb.format_exception(exc))
            await self._report_step(ctx, uuid, migration["uuid"], "evacuate", started, report)

    async def destroy_evacuated_guests(self, ctx: RequestContext) -> set[str]:
        """At start (Nova's ``_destroy_evacuated_instances``): remove the guests of servers
        evacuated away from this host while it was down — only those the conductor names
        (now on another host, or deleted), never a guest this host still runs for good.
        Returns their uuids."""
        gone: set[str] = set()
        try:
            evacuated = await self._conductor(ctx, "evacuated_instances", host=self.host)
        except BusError as exc:  # a conductor from before evacuations, or none yet: next start
            log.warning("compute.evacuated_guests_unknown", host=self.host, error=str(exc))
            return gone
        for item in evacuated:
            inst = Instance.from_dict(item["instance"])
            try:
                with contextlib.suppress(InstanceNotFound):
                    await self.driver.destroy(inst)
            except DriverError as exc:
                log.warning("compute.evacuated_guest_not_destroyed", instance=inst.uuid, error=_message(exc))
                continue
            log.info("compute.evacuated_guest_destroyed", instance=inst.uuid, host=self.host)
            gone.add(inst.uuid)
            await self._conductor(ctx, "evacuation_cleaned", host=self.host, migration_uuid=item["migration"]["uuid"])
        return gone
