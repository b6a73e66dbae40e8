"""The compute agent's half of copying and renewing servers (issue 11): a mixin of
:class:`~novalite.agent.manager.ComputeAgent`, served on ``compute.<host>``.

A snapshot (``snapshot_instance``, also for backups): the driver writes an image of the
guest's disk into a local file, and the agent uploads it to the image API itself with an
*upload ticket* the conductor mints for that one image (never the user's token, which does
not travel in bus messages), moving the server through Nova's task states on the way
(image_snapshot → image_pending_upload → image_uploading → None). Whatever fails, the
half-made image is deleted (through the conductor) and the server keeps its vm_state, with
the fault recorded.

A rebuild (``rebuild_instance``): the driver replaces the root disk from the new image and
boots the guest on this host (rebuilding → rebuild_spawning → ACTIVE, or SHUTOFF again if
the server was stopped, as Nova).

No database here either (the agent's import contract covers this module)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from novalite_drivers.base import ComputeDriver, DriverError, Instance, PowerState

from novalite import states
from novalite.agent.imagecache import Credentials, fetch_image, image_api
from novalite.context import RequestContext
from novalite.log import get_logger
from novalite.runtime import Runtime

log = get_logger("novalite.agent.snapshots")


def now_iso() -> str:
    """The agent's timestamp format (``novalite.agent.manager.now_iso``; not imported: that
    module imports this one)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


#: The header carrying the upload ticket (the image API's ``novalite.identity.tickets.HEADER``).
TICKET_HEADER = "X-Image-Ticket"

#: How long one upload of a snapshot's data may take (a read of the body stalled this long fails).
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=300, sock_connect=30)


class SnapshotAborted(DriverError):
    """The server left the snapshot's task state meanwhile (deleted, or reset by an admin)."""


class ImageOperations:
    """Snapshot, rebuild and shelve operations on this host's guests."""

    rt: Runtime
    host: str
    driver: ComputeDriver

    # Provided by ComputeAgent (typed here for the type checker).
    _conductor: Callable[..., Awaitable[Any]]
    _operate: Callable[..., Awaitable[bool]]
    _record_outcome: Callable[..., Awaitable[None]]
    _record: Callable[..., Awaitable[Any]]
    _lock: Callable[[str], asyncio.Lock]
    prepare_image: Callable[..., Awaitable[None]]

    def _snapshot_dir(self) -> Path:
        return Path(self.rt.settings.state_dir) / "snapshots"

    async def _image_step(self, ctx: RequestContext, uuid: str, task_state: str, expected: str) -> None:
        moved = await self._conductor(
            ctx, "image_task_state", instance_uuid=uuid, host=self.host, task_state=task_state, expected=expected
        )
        if not moved:
            raise SnapshotAborted(f"instance {uuid} left task state {expected} before {task_state}")

    async def snapshot_instance(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        image_id: str,
        backup_type: str | None = None,
        rotation: int | None = None,
    ) -> None:
        """Snapshot (or back up, with ``backup_type``/``rotation``) the guest into ``image_id``,
        an image the API created ``queued`` for it."""
        backup = backup_type is not None
        first = states.IMAGE_BACKUP if backup else states.IMAGE_SNAPSHOT
        event = "compute_backup_instance" if backup else "compute_snapshot_instance"
        uuid = instance["uuid"]
        started = now_iso()
        async with self._lock(uuid):
            inst = Instance.from_dict(instance)
            try:
                if not backup:
                    await self._image_step(ctx, uuid, states.IMAGE_SNAPSHOT, states.IMAGE_SNAPSHOT_PENDING)
                await self._snapshot_and_upload(ctx, inst, image_id, first)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self._conductor(ctx, "snapshot_failed", instance_uuid=uuid, host=self.host, image_id=image_id)
                    )
                if isinstance(exc, SnapshotAborted):
                    # A stale message (redelivered after this agent died in it, or the server
                    # was reset or deleted meanwhile): the server's state is no longer this
                    # snapshot's to report, so nothing is recorded (the restart's recovery
                    # ends an interrupted task, with its fault).
                    log.warning("compute.snapshot_dropped", instance=uuid, image_id=image_id, reason=str(exc))
                    return
                if not isinstance(exc, Exception):
                    raise
                message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
                log.warning("compute.operation_failed", instance=uuid, action_event=event, error=message)
                values = {"task_state": None, "power_state": await self._power(inst)}
                await self._record_outcome(ctx, uuid, event, started, values, exc, fault=message)
                return
            try:
                await self._conductor(
                    ctx,
                    "snapshot_done",
                    instance_uuid=uuid,
                    host=self.host,
                    image_id=image_id,
                    backup_type=backup_type,
                    rotation=rotation,
                )
            except Exception as exc:  # the image is whole: only a backup's rotation is lost
                log.warning("compute.snapshot_done_failed", instance=uuid, image_id=image_id, error=repr(exc))
            values = {"task_state": None, "power_state": await self._power(inst)}
            await self._record_outcome(ctx, uuid, event, started, values)

    async def _snapshot_and_upload(
        self,
        ctx: RequestContext,
        inst: Instance,
        image_id: str,
        first: str,
        pending: str = states.IMAGE_PENDING_UPLOAD,
        uploading: str = states.IMAGE_UPLOADING,
    ) -> None:
        """Snapshot into a local file, then upload it: task states ``first`` → ``pending`` →
        ``uploading`` (a snapshot's, or a shelve's)."""
        directory = self._snapshot_dir()
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{image_id}.snap"
        try:
            await self.driver.snapshot(inst, str(target))
            await self._image_step(ctx, inst.uuid, pending, first)
            ticket = await self._conductor(
                ctx, "image_upload_ticket", instance_uuid=inst.uuid, host=self.host, image_id=image_id
            )
            await self._image_step(ctx, inst.uuid, uploading, pending)
            await self._upload(image_id, ticket, target)
        finally:
            target.unlink(missing_ok=True)

    async def _upload(self, image_id: str, ticket: str, path: Path) -> None:
        """PUT the file as the image's data, authenticated by the upload ticket alone."""
        url = f"{image_api(self.rt.settings)}/v2/images/{image_id}/file"
        headers = {TICKET_HEADER: ticket, "Content-Type": "application/octet-stream"}
        try:
            fh = await asyncio.to_thread(open, path, "rb")
            try:
                async with aiohttp.ClientSession(timeout=UPLOAD_TIMEOUT) as session:
                    async with session.put(url, data=fh, headers=headers) as resp:
                        if resp.status != 204:
                            text = (await resp.text())[:300]
                            raise DriverError(f"cannot upload snapshot {image_id}: HTTP {resp.status} {text}")
            finally:
                await asyncio.to_thread(fh.close)
        except aiohttp.ClientError as exc:
            raise DriverError(f"cannot upload snapshot {image_id}: {exc}") from None
        log.info("snapshot.uploaded", image_id=image_id, host=self.host)

    @staticmethod
    def is_image_task(instance: dict[str, Any]) -> bool:
        """Is the instance in the middle of a snapshot, backup, rebuild, shelve or unshelve?"""
        task, vm_state = instance.get("task_state"), instance.get("vm_state")
        if task in states.IMAGE_TASKS | states.REBUILD_TASKS:
            return True
        if task in (states.SHELVING_OFFLOADING, states.UNSHELVING):
            return vm_state in (states.SHELVED, states.SHELVED_OFFLOADED)
        return task == states.SPAWNING and vm_state == states.SHELVED_OFFLOADED

    async def image_task_interrupted(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """At agent start: a snapshot or rebuild this agent died in. Its message is gone (the
        operation ran when it died), so it is ended here: a snapshot's half image is deleted
        and the server keeps its vm_state, a rebuild ends in ERROR; both with a fault."""
        log.warning("compute.image_task_interrupted", instance=instance["uuid"], task_state=instance["task_state"])
        if instance.get("vm_state") == states.SHELVED_OFFLOADED and instance["uuid"] in set(
            await self.driver.list_instances()
        ):
            # A half-booted unshelve: the server goes back to no host, so its guest goes too.
            with contextlib.suppress(DriverError):
                await self.driver.destroy(Instance.from_dict(instance))
        await self._conductor(
            ctx,
            "image_task_interrupted",
            instance_uuid=instance["uuid"],
            host=self.host,
            task_state=instance["task_state"],
        )

    # -- rebuild --------------------------------------------------------------------------

    async def rebuild_instance(
        self, ctx: RequestContext, instance: dict[str, Any], preserve_ephemeral: bool = False
    ) -> None:
        """Rebuild the guest from ``instance``'s (new) image and definition on this host.

        Ends ACTIVE, or SHUTOFF if the server was stopped before (Nova powers a rebuilt
        stopped server off again); a failed rebuild leaves the server in ERROR with the fault,
        as Nova's."""
        was_stopped = instance.get("vm_state") == states.STOPPED

        async def work(inst: Instance) -> None:
            await self._image_step(ctx, inst.uuid, states.REBUILD_SPAWNING, states.REBUILDING)
            if self.driver.needs_image_file and inst.image is not None:
                await self.prepare_image(ctx, inst)
            await self.driver.rebuild(inst, preserve_ephemeral=preserve_ephemeral)
            if was_stopped:
                await self.driver.power_off(inst, timeout=0)

        def failed(power: int | None) -> str | None:
            return states.ERROR

        final = states.STOPPED if was_stopped else states.ACTIVE
        await self._operate(ctx, instance, "compute_rebuild_instance", work, final, failed)

    # -- shelve ---------------------------------------------------------------------------

    async def shelve_instance(
        self, ctx: RequestContext, instance: dict[str, Any], image_id: str, offload: bool = False
    ) -> None:
        """Power the guest off and snapshot it into ``image_id`` (SHELVED); with ``offload``
        destroy the guest too and give its host's resources back (SHELVED_OFFLOADED). A
        failure leaves the server as it was (with the fault), and no half image."""
        uuid = instance["uuid"]
        started = now_iso()
        async with self._lock(uuid):
            inst = Instance.from_dict(instance)
            try:
                await self.driver.power_off(inst, timeout=60.0)
                await self._snapshot_and_upload(
                    ctx,
                    inst,
                    image_id,
                    states.SHELVING,
                    states.SHELVING_IMAGE_PENDING_UPLOAD,
                    states.SHELVING_IMAGE_UPLOADING,
                )
            except SnapshotAborted as exc:
                # Stale (redelivered after a restart, or ended meanwhile): not ours to report.
                log.warning("compute.shelve_dropped", instance=uuid, image_id=image_id, reason=str(exc))
                with contextlib.suppress(Exception):
                    await self._conductor(ctx, "snapshot_failed", instance_uuid=uuid, host=self.host, image_id=image_id)
                return
            except Exception as exc:
                await self._image_failed(ctx, inst, image_id, "compute_shelve_instance", started, exc)
                return
            if not offload:
                values = {"vm_state": states.SHELVED, "task_state": None, "power_state": await self._power(inst)}
                await self._record(ctx, uuid, "compute_shelve_instance", started, values, finish_action=True)
                return
            await self._offload(ctx, inst, "compute_shelve_instance", started)

    async def shelve_offload_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """Destroy a SHELVED server's guest and give its resources back (SHELVED_OFFLOADED)."""
        async with self._lock(instance["uuid"]):
            await self._offload(ctx, Instance.from_dict(instance), "compute_shelve_offload_instance", now_iso())

    async def _offload(self, ctx: RequestContext, inst: Instance, event: str, started: str) -> None:
        try:
            await self.driver.destroy(inst)
        except Exception as exc:
            message = str(exc)
            values = {"vm_state": states.SHELVED, "task_state": None}
            await self._record(ctx, inst.uuid, event, started, values, exc, finish_action=True, fault=message)
            return
        # The conductor clears the host and frees the claim: from then on this agent has no
        # say on the instance (its updates name a host it is no longer on).
        await self._conductor(
            ctx, "shelve_offloaded", instance_uuid=inst.uuid, host=self.host, event=event, start_time=started
        )

    async def unshelve_instance(self, ctx: RequestContext, instance: dict[str, Any], offloaded: bool = False) -> None:
        """Bring a shelved server back on this host: power the kept guest on, or (``offloaded``)
        boot a new one from the shelve image, which the payload names as its image. The
        shelve image is deleted once the server runs."""
        uuid = instance["uuid"]
        started = now_iso()
        async with self._lock(uuid):
            inst = Instance.from_dict(instance)
            try:
                if offloaded:
                    if uuid in set(await self.driver.list_instances()):
                        await self.driver.destroy(inst)  # what an interrupted unshelve left
                    if self.driver.needs_image_file and inst.image is not None:
                        tickets = await self._conductor(
                            ctx, "shelved_image_tickets", instance_uuid=uuid, host=self.host
                        )
                        await fetch_image(self.rt.settings, Credentials(dict(tickets)), inst)
                    await self.driver.spawn(inst)
                else:
                    await self.driver.power_on(inst)
            except Exception as exc:
                message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
                if offloaded:
                    with contextlib.suppress(Exception):
                        await self.driver.destroy(inst)
                    await self._conductor(ctx, "unshelve_failed", instance_uuid=uuid, host=self.host, message=message)
                else:
                    await self._record(
                        ctx,
                        uuid,
                        "compute_unshelve_instance",
                        started,
                        {"task_state": None},
                        exc,
                        finish_action=True,
                        fault=message,
                    )
                return
            values: dict[str, Any] = {
                "vm_state": states.ACTIVE,
                "task_state": None,
                "power_state": await self._power(inst),
                "launched_at": now_iso(),
            }
            await self._record(ctx, uuid, "compute_unshelve_instance", started, values, finish_action=True)
            await self._conductor(ctx, "unshelve_done", instance_uuid=uuid, host=self.host)

    async def _power(self, inst: Instance) -> int:
        try:
            return int(await self.driver.get_power_state(inst))
        except DriverError:
            return int(PowerState.NOSTATE)

    async def _image_failed(
        self, ctx: RequestContext, inst: Instance, image_id: str, event: str, started: str, exc: BaseException
    ) -> None:
        """A shelve's snapshot failed: delete the half image, end the task with the fault."""
        message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
        log.warning("compute.shelve_failed", instance=inst.uuid, error=message)
        with contextlib.suppress(Exception):
            await self._conductor(ctx, "snapshot_failed", instance_uuid=inst.uuid, host=self.host, image_id=image_id)
        values = {"task_state": None, "power_state": await self._power(inst)}
        await self._record(ctx, inst.uuid, event, started, values, exc, finish_action=True, fault=message)
