"""The conductor's half of copying and renewing servers (issue 11): a mixin of
:class:`ConductorManager`, so its methods are served on the ``conductor`` topic.

An agent taking a snapshot never holds the user's token: it asks here for an *upload
ticket* for the one image the API created for that snapshot (``image_upload_ticket``),
moves the server through the snapshot's task states with conditional updates
(``image_task_state``), and reports the end (``snapshot_done``: a backup's rotation) or the
failure (``snapshot_failed``: the half-made image is deleted, never left ``saving``).
Every method is about an instance on the calling agent's own host (``require_host``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from novalite import states
from novalite.bus import CallTimeout, RemoteError
from novalite.bus.identity import require_controller, require_host
from novalite.config import Settings
from novalite.context import RequestContext
from novalite.identity import tickets
from novalite.images.files import delete_data
from novalite.log import bind_request_id, get_logger
from novalite.relay import cast_after_commit
from novalite.runtime import ControllerRuntime
from novalite.store import actions, hosts, images, placement, shelved
from novalite.store import servers as records
from novalite.timeutil import parse_iso, utcnow

log = get_logger("novalite.conductor.snapshots")

#: The task-state steps an agent may take, each from the one before (Nova's snapshot and
#: rebuild). Anything else is refused, so an agent cannot move a server out of DELETING.
TASK_STEPS: dict[str, frozenset[str]] = {
    states.IMAGE_SNAPSHOT: frozenset({states.IMAGE_SNAPSHOT_PENDING}),
    states.IMAGE_PENDING_UPLOAD: frozenset({states.IMAGE_SNAPSHOT, states.IMAGE_BACKUP}),
    states.IMAGE_UPLOADING: frozenset({states.IMAGE_PENDING_UPLOAD}),
    states.REBUILD_SPAWNING: frozenset({states.REBUILDING}),
    states.SHELVING_IMAGE_PENDING_UPLOAD: frozenset({states.SHELVING}),
    states.SHELVING_IMAGE_UPLOADING: frozenset({states.SHELVING_IMAGE_PENDING_UPLOAD}),
}

#: A shelve's snapshot steps (their interruption is the shelve's).
SHELVE_TASKS = frozenset({states.SHELVING, states.SHELVING_IMAGE_PENDING_UPLOAD, states.SHELVING_IMAGE_UPLOADING})


class ImageTasks:
    """Snapshot, backup, rebuild and shelve steps the conductor drives or records."""

    rt: ControllerRuntime
    settings: Settings
    _host_down: Callable[[Any, datetime], bool]  # ConductorManager's

    async def _instance_on(self, instance_uuid: str, host: str) -> Any:
        async with self.rt.db.connect() as conn:
            row = await records.get_instance(conn, instance_uuid)
        if row is None or row.deleted or row.host != host:
            raise PermissionError(f"instance {instance_uuid} is not on host {host}")
        return row

    async def image_task_state(
        self, ctx: RequestContext, instance_uuid: str, host: str, task_state: str, expected: str
    ) -> bool:
        """Move the instance's task state one step (``expected`` → ``task_state``) on ``host``;
        False if it is no longer in ``expected`` (deleted meanwhile, reset by an admin)."""
        require_host(ctx, host, f"image_task_state of {instance_uuid}")
        if expected not in TASK_STEPS.get(task_state, frozenset()):
            raise ValueError(f"task state {expected!r} cannot step to {task_state!r}")
        async with self.rt.db.begin() as conn:
            return await records.update_instance(
                conn,
                instance_uuid,
                expect={"deleted": False, "host": host, "task_state": expected},
                task_state=task_state,
            )

    async def _snapshot_image(self, instance_uuid: str, image_id: str) -> dict[str, Any] | None:
        """The image the API made for a snapshot of this instance, or None."""
        async with self.rt.db.connect() as conn:
            image = await images.get_image(conn, image_id, RequestContext.admin())
        if image is None or image["properties"].get("instance_uuid") != instance_uuid:
            return None
        return image

    async def image_upload_ticket(self, ctx: RequestContext, instance_uuid: str, host: str, image_id: str) -> str:
        """An upload ticket for the data of ``image_id``, a snapshot of an instance on ``host``
        that is still waiting for its data: what the agent shows the image API instead of a
        token. It opens ``PUT /v2/images/{image_id}/file`` and nothing else."""
        require_host(ctx, host, "image_upload_ticket")
        row = await self._instance_on(instance_uuid, host)
        image = await self._snapshot_image(instance_uuid, image_id)
        # The API makes a snapshot's image for the server's project: an image a user made
        # naming this instance in its properties is not one a host may write.
        if image is None or image["status"] != images.QUEUED or image["owner"] != row.project_id:
            raise PermissionError(f"image {image_id} is not a snapshot of {instance_uuid} waiting for its data")
        key = await tickets.ticket_key(self.rt)
        return tickets.mint_upload_ticket(key, image_id, image["owner"], self.settings.image_ticket_ttl)

    async def snapshot_failed(self, ctx: RequestContext, instance_uuid: str, host: str, image_id: str) -> bool:
        """The snapshot into ``image_id`` failed on ``host``: delete the image unless its data
        arrived whole (active), so no half image is left ``queued`` or ``saving``."""
        require_host(ctx, host, "snapshot_failed")
        await self._instance_on(instance_uuid, host)
        async with self.rt.db.begin() as conn:
            image = await images.get_image(conn, image_id, RequestContext.admin(), for_update=True)
            if image is None or image["properties"].get("instance_uuid") != instance_uuid:
                return False
            if image["status"] == images.ACTIVE:
                return False
            await images.delete_image(conn, image_id)
        delete_data(self.settings, image_id)
        log.info("conductor.snapshot_image_deleted", instance=instance_uuid, image_id=image_id)
        return True

    async def snapshot_done(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        host: str,
        image_id: str,
        backup_type: str | None = None,
        rotation: int | None = None,
    ) -> list[str]:
        """The snapshot's data is uploaded. For a backup, delete this server's oldest backups
        of ``backup_type`` beyond ``rotation`` (Nova's ``_rotate_backups``; the new one
        counts, so ``rotation`` 1 keeps only it). Returns the deleted image ids."""
        require_host(ctx, host, "snapshot_done")
        row = await self._instance_on(instance_uuid, host)
        if backup_type is None or rotation is None:
            return []
        async with self.rt.db.begin() as conn:
            image = await images.get_image(conn, image_id, RequestContext.admin())
            owner = image["owner"] if image is not None else row.project_id
            backups = await images.instance_images(conn, instance_uuid, owner, "backup", backup_type)
            # The new backup first whatever the clock says (created_at may tie), then newest first.
            backups.sort(key=lambda i: i["id"] != image_id)
            doomed = [i["id"] for i in backups[max(int(rotation), 0) :] if not i["protected"]]
            for old in doomed:
                await images.delete_image(conn, old)
        for old in doomed:
            delete_data(self.settings, old)
        if doomed:
            log.info("conductor.backups_rotated", instance=instance_uuid, deleted=doomed, rotation=rotation)
        return doomed

    async def image_task_interrupted(self, ctx: RequestContext, instance_uuid: str, host: str, task_state: str) -> bool:
        """The agent of ``host`` restarted while it snapshotted or rebuilt the instance: end the
        task (a rebuild in ERROR, whose root disk is half made), record the fault, and delete
        the snapshot images of this instance still waiting for their data (never left
        ``queued`` or ``saving``). False if the instance moved on meanwhile."""
        require_host(ctx, host, "image_task_interrupted")
        row = await self._instance_on(instance_uuid, host)
        if row.vm_state in (states.SHELVED, states.SHELVED_OFFLOADED) and task_state in (
            states.SHELVING_OFFLOADING,
            states.UNSHELVING,
            states.SPAWNING,
        ):
            return await self._unshelve_interrupted(ctx, row, host, task_state)
        return await self._end_image_task(row, host, task_state, f"the compute agent of {host} restarted")

    async def _end_image_task(self, row: Any, host: str, task_state: str, why: str) -> bool:
        """End an interrupted snapshot, backup, shelve or rebuild of ``row`` on ``host``: see
        :meth:`image_task_interrupted`; ``why`` ends the fault's message."""
        instance_uuid = row.uuid
        rebuild = task_state in states.REBUILD_TASKS
        if not rebuild and task_state not in states.IMAGE_TASKS:
            raise ValueError(f"{task_state!r} is not a snapshot or rebuild task state")
        values: dict[str, Any] = {"task_state": None}
        if rebuild:
            values["vm_state"] = states.ERROR
        what = "rebuild" if rebuild else "shelve" if task_state in SHELVE_TASKS else "snapshot"
        doomed: list[str] = []
        async with self.rt.db.begin() as conn:
            changed = await records.update_instance(
                conn, instance_uuid, expect={"deleted": False, "host": host, "task_state": task_state}, **values
            )
            if not changed:
                return False
            message = f"The {what} was interrupted: {why}."
            await records.add_fault(conn, instance_uuid, message, host=host)
            await self._interrupted_event(conn, instance_uuid, task_state, host, message)
            if not rebuild:
                for image_type in ("snapshot", "backup"):
                    for image in await images.instance_images(conn, instance_uuid, row.project_id, image_type):
                        if image["status"] in (images.QUEUED, images.SAVING):
                            await images.delete_image(conn, image["id"])
                            doomed.append(image["id"])
        for image_id in doomed:
            delete_data(self.settings, image_id)
        log.warning("conductor.image_task_interrupted", instance=instance_uuid, task_state=task_state, deleted=doomed)
        return True

    async def _interrupted_event(self, conn: Any, instance_uuid: str, task_state: str, host: str, message: str) -> None:
        """End the interrupted action (the newest unfinished createImage, createBackup or
        rebuild) with an Error event, so ``openstack server event show`` tells what happened."""
        if task_state in states.REBUILD_TASKS:
            names, event = {"rebuild"}, "compute_rebuild_instance"
        elif task_state in SHELVE_TASKS:
            names, event = {"shelve"}, "compute_shelve_instance"
        elif task_state == states.IMAGE_BACKUP:
            names, event = {"createBackup"}, "compute_backup_instance"
        else:
            names, event = {"createImage", "createBackup"}, "compute_snapshot_instance"
        for action in await actions.list_actions(conn, instance_uuid):
            if action.action in names and action.finish_time is None:
                if action.action == "createBackup":
                    event = "compute_backup_instance"
                await actions.record_event(
                    conn,
                    instance_uuid,
                    action.request_id,
                    event,
                    start_time=action.start_time,
                    finish_time=utcnow(),
                    result="Error",
                    traceback=message,
                    host=host,
                    finish=True,
                )
                return

    # -- shelve -------------------------------------------------------------------------------

    async def shelve_offloaded(
        self, ctx: RequestContext, instance_uuid: str, host: str, event: str, start_time: str | None = None
    ) -> bool:
        """The agent destroyed a shelved server's guest: it is SHELVED_OFFLOADED, on no host,
        and its claim is freed (in one transaction)."""
        require_host(ctx, host, "shelve_offloaded")
        async with self.rt.db.begin() as conn:
            row = await records.get_instance(conn, instance_uuid, lock=True)
            if row is None or row.deleted or row.host != host:
                return False
            await records.update_instance(
                conn,
                instance_uuid,
                vm_state=states.SHELVED_OFFLOADED,
                task_state=None,
                power_state=0,
                host=None,
                node=None,
            )
            await placement.release(conn, instance_uuid)
            await self._event(conn, ctx, instance_uuid, event, host, start_time)
        log.info("conductor.shelve_offloaded", instance=instance_uuid, host=host)
        return True

    async def _event(
        self,
        conn: Any,
        ctx: RequestContext,
        instance_uuid: str,
        event: str,
        host: str | None,
        start_time: str | None,
        error: str | None = None,
    ) -> None:
        await actions.record_event(
            conn,
            instance_uuid,
            ctx.request_id,
            event,
            start_time=parse_iso(start_time) if start_time else None,
            finish_time=utcnow(),
            result="Error" if error else "Success",
            traceback=error,
            host=host,
        )
        await actions.finish_action(conn, instance_uuid, ctx.request_id)

    async def unshelve_instance(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        availability_zone: str | None = None,
        host: str | None = None,
    ) -> None:
        """Place a SHELVED_OFFLOADED server anew (the scheduler claims on the host it picks, as
        for a build, in a new build attempt) and hand it to that host's agent to boot from its
        shelve image (on ``host`` if an admin named one, 2.91). No host: it stays
        SHELVED_OFFLOADED with the fault, as Nova."""
        require_controller(ctx, "unshelve instances")
        started = utcnow()
        async with self.rt.db.begin() as conn:
            row = await records.get_instance(conn, instance_uuid, lock=True)
            if row is None or row.deleted or row.vm_state != states.SHELVED_OFFLOADED or row.host is not None:
                return
            if row.task_state != states.UNSHELVING:
                return
            attempt = int(row.build_attempt or 0) + 1
            await records.update_instance(conn, instance_uuid, build_attempt=attempt)
        spec = {
            "instance_uuid": row.uuid,
            "project_id": row.project_id,
            "flavor": row.flavor,
            "image": {"id": row.image_ref, **(row.image_meta or {})},
            "availability_zone": availability_zone or row.requested_az,
            "ignore_hosts": [],
            "build_attempt": attempt,
            **({"force_host": host} if host else {}),
        }
        try:
            dest = await self.rt.bus.call(
                ctx, "scheduler", "select_destinations", spec=spec, timeout=self.settings.rpc_timeout
            )
        except (RemoteError, CallTimeout) as exc:
            message = (
                "No valid host was found. There are not enough hosts available."
                if isinstance(exc, RemoteError) and exc.exc_type == "NoValidHost"
                else f"Scheduling failed: {exc}"
            )
            async with self.rt.db.begin() as conn:
                await records.update_instance(conn, instance_uuid, expect={"host": None}, task_state=None)
                await records.add_fault(conn, instance_uuid, message)
                await self._event(
                    conn, ctx, instance_uuid, "conductor_unshelve_instance", None, started.isoformat(), message
                )
            return
        await self._send_unshelve(ctx, row, attempt, dest)

    async def _send_unshelve(self, ctx: RequestContext, row: Any, attempt: int, dest: dict[str, Any]) -> None:
        host = dest["host"]
        shelved = await self._shelved_image(row)  # before the transaction: SQLite has one connection
        async with self.rt.db.begin() as conn:
            placed = await records.update_instance(
                conn,
                row.uuid,
                expect={"deleted": False, "host": None, "build_attempt": attempt, "task_state": states.UNSHELVING},
                host=host,
                node=dest["node"],
                availability_zone=dest.get("availability_zone"),
                task_state=states.SPAWNING,
            )
            if not placed:
                await placement.release(conn, row.uuid)
                return
            payload = await records.instance_payload(conn, row.uuid)
            assert payload is not None
            if shelved is not None:
                payload["image"] = {
                    "id": shelved["id"],
                    "disk_format": shelved["disk_format"] or "raw",
                    "container_format": shelved["container_format"] or "bare",
                    "properties": (payload.get("image") or {}).get("properties") or {},
                }
            await cast_after_commit(conn, ctx, f"compute.{host}", "unshelve_instance", instance=payload, offloaded=True)
        log.info("conductor.unshelve_sent", instance=row.uuid, host=host)

    async def _shelved_image(self, row: Any) -> dict[str, Any] | None:
        image_id = (row.system_metadata or {}).get("shelved_image_id")
        if not image_id:
            return None
        async with self.rt.db.connect() as conn:
            return await images.get_image(conn, image_id, RequestContext.admin())

    async def shelved_image_tickets(self, ctx: RequestContext, instance_uuid: str, host: str) -> dict[str, str]:
        """Download tickets for the shelve image of an instance being unshelved on ``host``, and
        for the kernel and ramdisk its image names (the snapshot inherits those properties)."""
        require_host(ctx, host, "shelved_image_tickets")
        row = await self._instance_on(instance_uuid, host)
        image_id = (row.system_metadata or {}).get("shelved_image_id")
        if not image_id:
            return {}
        props = (row.image_meta or {}).get("properties") or {}
        ids = [image_id, *(props[k] for k in ("kernel_id", "ramdisk_id") if props.get(k))]
        key = await tickets.ticket_key(self.rt)
        ttl = self.settings.image_ticket_ttl
        return {i: tickets.mint_image_ticket(key, i, row.project_id, ttl) for i in ids}

    async def unshelve_failed(self, ctx: RequestContext, instance_uuid: str, host: str, message: str) -> None:
        """The host could not boot the unshelved server: back to SHELVED_OFFLOADED, claim freed."""
        require_host(ctx, host, "unshelve_failed")
        async with self.rt.db.begin() as conn:
            row = await records.get_instance(conn, instance_uuid, lock=True)
            if row is None or row.deleted or row.host != host:
                return
            await records.update_instance(
                conn, instance_uuid, vm_state=states.SHELVED_OFFLOADED, task_state=None, host=None, node=None
            )
            await placement.release(conn, instance_uuid)
            await records.add_fault(conn, instance_uuid, message, host=host)
            await self._event(conn, ctx, instance_uuid, "compute_unshelve_instance", host, None, message)

    async def unshelve_done(self, ctx: RequestContext, instance_uuid: str, host: str) -> None:
        """The server runs again: its shelve image is deleted and forgotten."""
        require_host(ctx, host, "unshelve_done")
        row = await self._instance_on(instance_uuid, host)
        sysmeta = dict(row.system_metadata or {})
        image_id = sysmeta.get("shelved_image_id")
        for key in ("shelved_image_id", "shelved_at", "shelved_host"):
            sysmeta.pop(key, None)
        async with self.rt.db.begin() as conn:
            await records.update_instance(conn, instance_uuid, system_metadata=sysmeta)
            if image_id:
                await images.delete_image(conn, image_id)
        if image_id:
            delete_data(self.settings, image_id)

    async def _unshelve_interrupted(self, ctx: RequestContext, row: Any, host: str, task_state: str) -> bool:
        """An offload or unshelve the agent died in: the task ends with a fault; an offloaded
        server being booted here goes back to SHELVED_OFFLOADED with its claim freed (the
        user unshelves it again), the shelve image kept."""
        message = f"The {'offload' if task_state == states.SHELVING_OFFLOADING else 'unshelve'} was interrupted: "
        message += f"the compute agent of {host} restarted."
        async with self.rt.db.begin() as conn:
            values: dict[str, Any] = {"task_state": None}
            if row.vm_state == states.SHELVED_OFFLOADED:
                values.update(host=None, node=None)
            changed = await records.update_instance(
                conn, row.uuid, expect={"deleted": False, "host": host, "task_state": task_state}, **values
            )
            if not changed:
                return False
            if row.vm_state == states.SHELVED_OFFLOADED:
                await placement.release(conn, row.uuid)
            await records.add_fault(conn, row.uuid, message, host=host)
        log.warning("conductor.unshelve_interrupted", instance=row.uuid, task_state=task_state)
        return True

    # -- periodic offload (shelved_offload_time > 0) and the delete of a shelved server -----

    async def offload_shelved_loop(self) -> None:
        """Offload servers SHELVED longer than ``shelved_offload_time`` (a task of the
        conductor; Nova's ``_poll_shelved_instances``), and end snapshots whose host is down.
        Errors are logged, never fatal."""
        while True:
            wait = self.settings.shelved_offload_time
            await asyncio.sleep(min(5.0, max(0.5, wait / 10)) if wait > 0 else 5.0)
            try:
                await self.end_image_tasks_on_down_hosts()
                if self.settings.shelved_offload_time > 0:
                    await self.offload_shelved()
            except Exception:
                log.exception("conductor.image_periodic_failed")

    async def end_image_tasks_on_down_hosts(self) -> list[str]:
        """End the snapshots, backups and shelves under way on hosts that are down (no
        heartbeat for ``service_down_time``), as the agent's restart would: the server keeps
        its vm_state with a fault, its half image is deleted. The uuids ended. Should the
        agent be alive after all, its next step finds the task gone and drops the snapshot."""
        async with self.rt.db.connect() as conn:
            rows = await shelved.image_task_instances(conn, states.IMAGE_TASKS)
            if not rows:
                return []
            services = {s.host: s for s in await hosts.list_services(conn, binary=hosts.COMPUTE_BINARY)}
        now = utcnow()
        ended: list[str] = []
        for row in rows:
            service = services.get(row.host)
            if service is not None and self._host_down(service, now):
                if await self._end_image_task(row, row.host, row.task_state, f"the compute host {row.host} went down"):
                    ended.append(row.uuid)
        return ended

    async def offload_shelved(self, ctx: RequestContext | None = None) -> list[str]:
        """Send ``shelve_offload_instance`` to the host of every server SHELVED (no task)
        since more than ``shelved_offload_time`` seconds; the uuids sent. A server whose
        host is down waits for the next run (its agent would never answer)."""
        ctx = ctx or RequestContext.admin()
        wait = self.settings.shelved_offload_time
        if wait <= 0:
            return []
        cutoff = utcnow() - timedelta(seconds=wait)
        async with self.rt.db.connect() as conn:
            rows = await shelved.shelved_instances(conn)
        sent: list[str] = []
        with bind_request_id(ctx.request_id):
            for row in rows:
                at = (row.system_metadata or {}).get("shelved_at")
                if at and parse_iso(at) <= cutoff and await self._offload_one(ctx, row):
                    sent.append(row.uuid)
        return sent

    async def _offload_one(self, ctx: RequestContext, row: Any) -> bool:
        async with self.rt.db.begin() as conn:
            if not await records.compute_host_is_up(conn, row.host, self.settings.service_down_time):
                return False
            if not await records.update_instance(
                conn,
                row.uuid,
                expect={"deleted": False, "vm_state": states.SHELVED, "task_state": None, "host": row.host},
                task_state=states.SHELVING_OFFLOADING,
            ):
                return False  # unshelved, deleted or offloaded meanwhile
            await actions.start_action(conn, row.uuid, "shelveOffload", ctx.request_id, ctx.user_id, row.project_id)
            payload = await records.payload_from_row(conn, row)
            payload["task_state"] = states.SHELVING_OFFLOADING
            await cast_after_commit(conn, ctx, f"compute.{row.host}", "shelve_offload_instance", instance=payload)
        log.info("conductor.shelved_offload_due", instance=row.uuid, host=row.host)
        return True

    async def delete_shelved_image(self, ctx: RequestContext, instance_uuid: str, image_id: str) -> bool:
        """A SHELVED or SHELVED_OFFLOADED server was deleted: delete its shelve image too (as
        Nova's delete does). Sent by the API through the outbox with the delete; only an
        image that is that instance's snapshot is deleted. False if there is none."""
        require_controller(ctx, "delete shelve images")
        async with self.rt.db.begin() as conn:
            image = await images.get_image(conn, image_id, RequestContext.admin(), for_update=True)
            if image is None or image["properties"].get("instance_uuid") != instance_uuid:
                return False
            await images.delete_image(conn, image_id)
        delete_data(self.settings, image_id)
        log.info("conductor.shelve_image_deleted", instance=instance_uuid, image_id=image_id)
        return True
