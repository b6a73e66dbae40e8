"""The conductor: drives builds, and is the compute agents' only way to the database.

From the API: ``build_instances`` (schedule → claim → hand the instance to its host's
agent, rescheduling on failure up to ``scheduler_max_attempts``).

From the agents: service heartbeats and compute-node resource reports, instance
updates with their action events, build failures, finished deletes, power-state
syncs, and the list of instances a host should have (for reconciliation at start).

Periodically: builds that outlived ``build_timeout``, or whose host went down, go to
ERROR so that nothing stays in BUILD forever.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from typing import Any

from novalite import states
from novalite.bus import CallTimeout, RemoteError
from novalite.bus.identity import agent_host, is_controller, require_controller, require_host
from novalite.conductor import reclaim
from novalite.conductor.moves import MoveTasks
from novalite.conductor.overlays import OverlaySync
from novalite.conductor.snapshots import ImageTasks
from novalite.context import RequestContext
from novalite.identity import tickets
from novalite.log import bind_request_id, get_logger
from novalite.relay import cast_after_commit
from novalite.runtime import ControllerRuntime
from novalite.servicegroup import is_up
from novalite.store import actions, hosts, placement, server_ports
from novalite.store import servers as records
from novalite.tasks import cancel_and_wait
from novalite.timeutil import parse_iso, utcnow

log = get_logger("novalite.conductor")

NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
SCHEDULING_TIMED_OUT = "Scheduling timed out: no scheduler answered."
#: Columns an agent may set through ``instance_update``.
AGENT_WRITABLE = {"vm_state", "task_state", "power_state", "launched_at", "terminated_at", "progress"}


class ConductorManager(MoveTasks, ImageTasks):
    topic = "conductor"

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt
        self.settings = rt.settings
        self._tasks: set[asyncio.Task[Any]] = set()
        self._periodic: list[asyncio.Task[None]] = []
        #: Instances this process is scheduling now (a duplicate request for one is dropped).
        self._scheduling: set[str] = set()
        #: When this conductor started: a host is judged down by its silence while we listen,
        #: not by heartbeats missed while no controller was running to receive them.
        self._started_at = utcnow()
        #: Hosts' VXLAN overlay peers, kept as the database says (issue 12).
        self.overlays = OverlaySync(rt, interval=self.settings.overlay_sync_interval)

    async def start(self) -> None:
        await self.rt.bus.serve(self.topic, self)
        if not self.rt.bus.durable:
            ctx = RequestContext.admin()
            with bind_request_id(ctx.request_id):
                await self.recover_builds(ctx)
                await self.recover_moves(ctx)  # issue 10: resizes, migrations, evacuations
        self._periodic = [
            asyncio.create_task(self._report_loop()),
            asyncio.create_task(self._build_watchdog()),
            asyncio.create_task(reclaim.reclaim_loop(self.rt)),
            asyncio.create_task(self._confirm_resizes_loop()),
            asyncio.create_task(self.offload_shelved_loop()),  # issue 11: shelved_offload_time > 0
            asyncio.create_task(self.overlays.run()),  # issue 12: VXLAN peers
        ]

    async def stop(self) -> None:
        await cancel_and_wait([*self._periodic, *self._tasks])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- builds (from the API) ----------------------------------------------------------------

    async def build_instances(
        self, ctx: RequestContext, instance_uuids: list[str], request_spec: dict[str, Any]
    ) -> None:
        """Schedule each instance and hand it to its host's agent.

        Returns only when that is durable for every instance — placed, claimed, and its
        build message committed to the outbox with the SPAWNING state — so that the
        transport acknowledges this message only then: a conductor that dies midway has
        it redelivered. Idempotent: an instance that is no longer waiting to be
        scheduled (already placed, deleted, failed) is left alone.
        """
        require_controller(ctx, "request builds")
        ignore = list(request_spec.get("ignore_hosts") or [])
        specs = [dict(request_spec, instance_uuid=uuid, ignore_hosts=ignore) for uuid in instance_uuids]
        await self._schedule_and_build(ctx, specs)

    async def _schedule_and_build(self, ctx: RequestContext, specs: list[dict[str, Any]]) -> None:
        with bind_request_id(ctx.request_id):
            fresh = [s for s in specs if s["instance_uuid"] not in self._scheduling]
            if len(fresh) < len(specs):
                log.info("conductor.duplicate_build_request", instances=len(specs) - len(fresh))
            mine = {s["instance_uuid"] for s in fresh}
            self._scheduling |= mine
            try:
                if len(fresh) == 1:
                    await self._schedule_one(ctx, fresh[0])
                elif fresh:
                    await self._schedule_many(ctx, fresh)
            except Exception:
                # Left in SCHEDULING: a redelivery, the next start's recovery or the build
                # watchdog ends it; never a silent BUILD forever.
                log.exception("conductor.schedule_crashed", instances=sorted(mine))
                raise
            finally:
                self._scheduling -= mine

    async def _start_attempts(self, uuids: list[str]) -> dict[str, int]:
        """Start the next build attempt of each instance still waiting for a host.

        From then on the scheduler refuses claims for an older attempt (a request
        redelivered after its conductor died), and a claim the old attempt left (made, but
        its host never recorded) is given back, in the same transaction.
        """
        attempts: dict[str, int] = {}
        async with self.rt.db.begin() as conn:
            for uuid in uuids:
                attempt = await records.start_build_attempt(conn, uuid)
                if attempt is None:
                    log.info("conductor.build_request_stale", instance=uuid)
                    continue
                if attempt > 1:
                    await placement.release(conn, uuid)
                attempts[uuid] = attempt
        return attempts

    async def _schedule_one(self, ctx: RequestContext, spec: dict[str, Any]) -> None:
        uuid = spec["instance_uuid"]
        started = utcnow()
        attempt = (await self._start_attempts([uuid])).get(uuid)
        if attempt is None:
            return
        try:
            dest = await self.rt.bus.call(
                ctx,
                "scheduler",
                "select_destinations",
                spec=dict(spec, build_attempt=attempt),
                timeout=self.settings.rpc_timeout,
            )
        except RemoteError as exc:
            if exc.exc_type == "StaleClaim":
                log.info("conductor.build_attempt_superseded", instance=uuid, build_attempt=attempt)
                return
            await self._fail_build(ctx, uuid, scheduling_failure(exc), None, started, code=500)
            return
        except CallTimeout:
            await self._fail_build(ctx, uuid, SCHEDULING_TIMED_OUT, None, started)
            return
        await self._hand_over(ctx, spec, attempt, dest, started)

    async def _schedule_many(self, ctx: RequestContext, specs: list[dict[str, Any]]) -> None:
        """A multi-create in one decision, as Nova: every instance is placed, or none is
        (all ERROR with "No valid host was found")."""
        started = utcnow()
        attempts = await self._start_attempts([s["instance_uuid"] for s in specs])
        specs = [s for s in specs if s["instance_uuid"] in attempts]
        if not specs:
            return
        uuids = [s["instance_uuid"] for s in specs]
        try:
            dests = await self.rt.bus.call(
                ctx,
                "scheduler",
                "select_destinations",
                spec=dict(specs[0], build_attempts=attempts),
                instance_uuids=uuids,
                timeout=self.settings.rpc_timeout,
            )
        except RemoteError as exc:
            if exc.exc_type == "StaleClaim":
                # One of them moved on meanwhile (a duplicate request); nothing was claimed.
                # Place the others one by one, each in a new attempt.
                log.info("conductor.multi_create_superseded", instances=len(uuids))
                await asyncio.gather(*(self._schedule_one(ctx, s) for s in specs))
                return
            message = scheduling_failure(exc)
            await asyncio.gather(*(self._fail_build(ctx, u, message, None, started, code=500) for u in uuids))
            return
        except CallTimeout:
            await asyncio.gather(*(self._fail_build(ctx, u, SCHEDULING_TIMED_OUT, None, started) for u in uuids))
            return
        await asyncio.gather(
            *(
                self._hand_over(ctx, spec, attempts[spec["instance_uuid"]], dest, started)
                for spec, dest in zip(specs, dests, strict=True)
            )
        )

    async def _hand_over(
        self, ctx: RequestContext, spec: dict[str, Any], attempt: int, dest: dict[str, Any], started: Any
    ) -> None:
        """Record the chosen host and commit the build message to it (the outbox), together."""
        uuid = spec["instance_uuid"]
        host = dest["host"]
        async with self.rt.db.begin() as conn:
            updated = await records.update_instance(
                conn,
                uuid,
                expect={"deleted": False, "vm_state": states.BUILDING, "host": None, "build_attempt": attempt},
                host=host,
                node=dest["node"],
                availability_zone=dest.get("availability_zone"),
                task_state=states.SPAWNING,
            )
            if not updated:
                # Deleted while we scheduled it (the delete freed its claims), or another
                # attempt took over (its claim is not ours to free): nothing to hand over.
                log.info("conductor.build_gone_while_scheduling", instance=uuid, build_attempt=attempt)
                return
            await actions.record_event(
                conn,
                uuid,
                ctx.request_id,
                "conductor_schedule_and_build_instances",
                start_time=started,
                finish_time=utcnow(),
                result="Success",
            )
            payload = await records.instance_payload(conn, uuid)
            await cast_after_commit(
                conn, ctx, f"compute.{host}", "build_and_run_instance", instance=payload, request_spec=spec
            )
        log.info("conductor.build_sent", instance=uuid, host=host, build_attempt=attempt)

    async def _fail_build(
        self, ctx: RequestContext, uuid: str, message: str, host: str | None, started: Any, code: int = 500
    ) -> None:
        async with self.rt.db.begin() as conn:
            await self._fail_build_in(conn, ctx, uuid, message, host, started, code)

    async def _fail_build_in(
        self, conn: Any, ctx: RequestContext, uuid: str, message: str, host: str | None, started: Any, code: int = 500
    ) -> None:
        """Put the build in ERROR and free its claim, inside the caller's transaction.

        The row is updated (so locked) before the release: a claim racing in either
        committed first and is released here, or waits and is refused as stale."""
        failed = await records.update_instance(
            conn, uuid, expect={"deleted": False}, vm_state=states.ERROR, task_state=None
        )
        await placement.release(conn, uuid)
        if failed:
            self.rt.metrics.observe_build("error")
            await records.add_fault(conn, uuid, message, code=code, host=host)
            await actions.record_event(
                conn,
                uuid,
                ctx.request_id,
                "conductor_schedule_and_build_instances",
                start_time=started,
                finish_time=utcnow(),
                result="Error",
                traceback=message,
            )
            await actions.finish_action(conn, uuid, ctx.request_id)
        log.warning("conductor.build_failed", instance=uuid, reason=message)

    @staticmethod
    def _is_current_build(row: Any, host: str, build_attempt: int | None) -> bool:
        """Is this report about the build now under way? ``build_attempt`` None: a 1.x agent,
        which does not send it; then the host alone decides."""
        return (
            row is not None
            and not row.deleted
            and row.vm_state == states.BUILDING
            and row.host == host
            and (build_attempt is None or int(row.build_attempt or 0) == int(build_attempt))
        )

    async def build_failed(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        host: str,
        message: str,
        reschedule: bool = True,
        build_attempt: int | None = None,
    ) -> None:
        """An agent could not build: release its claim, then try another host or go to ERROR.

        A stale report (the build was already failed by the watchdog, moved to another
        host, or is a later attempt than the one reported on) changes nothing: releasing
        would free another attempt's claim.
        """
        require_host(ctx, host, "build_failed")
        async with self.rt.db.begin() as conn:
            # Locked: a delete racing this report either set DELETING first (seen below) or
            # waits and then sees where the build went.
            row = await records.get_instance(conn, instance_uuid, lock=True)
            if row is None or row.deleted:
                return
            if not self._is_current_build(row, host, build_attempt):
                log.info(
                    "conductor.stale_build_failure",
                    instance=instance_uuid,
                    host=host,
                    vm_state=row.vm_state,
                    build_attempt=build_attempt,
                )
                return
            if row.task_state == states.DELETING:
                # The user deleted it while it built: its delete waits on this host's agent
                # (behind the build) and finishes it there, freeing the claim. Rescheduling
                # now would move it away from that delete, which could then never finish.
                log.info("conductor.build_failed_while_deleting", instance=instance_uuid, host=host)
                return
            attempts = len(await records.retried_build_hosts(conn, instance_uuid))
            tried = attempts + 1
            if reschedule and tried < self.settings.scheduler_max_attempts:
                await placement.release(conn, instance_uuid)
                # A retried attempt's fault is not shown as the instance's fault.
                await records.add_fault(conn, instance_uuid, message, code=records.RETRY_FAULT_CODE, host=host)
                ignore = [h for h in await records.retried_build_hosts(conn, instance_uuid) if h]
                await records.update_instance(conn, instance_uuid, host=None, node=None, task_state=states.SCHEDULING)
                # Committed with the state: a conductor that dies now still reschedules.
                await cast_after_commit(
                    conn,
                    ctx,
                    self.topic,
                    "build_instances",
                    instance_uuids=[instance_uuid],
                    request_spec=spec_from_row(row, ignore),
                )
                log.info("conductor.rescheduling", instance=instance_uuid, failed_host=host, attempt=tried)
                self.rt.metrics.observe_build("rescheduled")
                return
            await self._fail_build_in(conn, ctx, instance_uuid, message, host, utcnow())

    async def recover_builds(self, ctx: RequestContext) -> int:
        """Re-drive builds whose messages may have died with this process (at start).

        Only needed when the transport is not durable (in-process queues): RabbitMQ keeps
        an unacknowledged message and the outbox keeps an unsent one. An instance waiting
        for a host is scheduled again; one handed to a host gets its build message again,
        for the same attempt (the agent's ``build_start`` check drops a duplicate).
        """
        require_controller(ctx, "recover builds")
        async with self.rt.db.connect() as conn:
            rows = await records.building_instances(conn)
            full = [await records.get_instance(conn, r.uuid) for r in rows]
        count = 0
        for row in full:
            if row is None:
                continue
            count += 1
            if row.host is None:
                log.warning("conductor.recover_schedule", instance=row.uuid)
                self._spawn(self._schedule_and_build(ctx, [dict(spec_from_row(row, []), instance_uuid=row.uuid)]))
                continue
            log.warning("conductor.recover_build_message", instance=row.uuid, host=row.host)
            async with self.rt.db.begin() as conn:
                payload = await records.instance_payload(conn, row.uuid)
                spec = dict(spec_from_row(row, []), instance_uuid=row.uuid)
                await cast_after_commit(
                    conn, ctx, f"compute.{row.host}", "build_and_run_instance", instance=payload, request_spec=spec
                )
        return count

    # -- agent reports ------------------------------------------------------------------------

    async def report_service(
        self, ctx: RequestContext, host: str, binary: str, availability_zone: str | None
    ) -> dict[str, Any]:
        """A heartbeat. Returns the service's admin state so the agent can log it."""
        require_host(ctx, host, "report_service")
        async with self.rt.db.begin() as conn:
            row = await hosts.upsert_service(conn, host, binary, binary.replace("nova-", ""), availability_zone)
        assert row is not None  # upserted in this transaction
        return {"id": row.uuid, "disabled": bool(row.disabled)}

    async def report_compute_node(self, ctx: RequestContext, host: str, resources: dict[str, Any]) -> str:
        """Create or update the host's compute node, resource provider and inventories."""
        require_host(ctx, host, "report_compute_node")
        node_name = resources.get("hypervisor_hostname") or host
        uuid = hosts.node_uuid(node_name)
        settings = self.settings
        values = dict(
            host=host,
            hypervisor_hostname=node_name,
            hypervisor_type=resources["hypervisor_type"],
            hypervisor_version=int(resources.get("hypervisor_version", 1)),
            vcpus=int(resources["vcpus"]),
            memory_mb=int(resources["memory_mb"]),
            local_gb=int(resources["local_gb"]),
            cpu_info=resources.get("cpu_info") or {},
            host_ip=resources.get("host_ip"),
        )
        async with self.rt.db.begin() as conn:
            await hosts.upsert_compute_node(conn, uuid, **values)
            await placement.ensure_provider(conn, uuid, node_name)
            await placement.set_inventories(
                conn,
                uuid,
                {
                    placement.VCPU: placement.Inventory(
                        total=values["vcpus"], allocation_ratio=settings.cpu_allocation_ratio
                    ),
                    placement.MEMORY_MB: placement.Inventory(
                        total=values["memory_mb"],
                        reserved=settings.reserved_host_memory_mb,
                        allocation_ratio=settings.ram_allocation_ratio,
                    ),
                    placement.DISK_GB: placement.Inventory(
                        total=values["local_gb"],
                        reserved=settings.reserved_host_disk_gb,
                        allocation_ratio=settings.disk_allocation_ratio,
                    ),
                },
            )
        return uuid

    async def build_start(
        self, ctx: RequestContext, instance_uuid: str, host: str, build_attempt: int | None = None
    ) -> bool:
        """May ``host`` still build this instance? False for a stale (redelivered) build message:
        the build was failed meanwhile (host down, timeout), deleted, finished, or moved on
        to another attempt."""
        require_host(ctx, host, "build_start")
        async with self.rt.db.connect() as conn:
            row = await records.get_instance(conn, instance_uuid)
        return self._is_current_build(row, host, build_attempt)

    async def instance_update(
        self,
        ctx: RequestContext,
        instance_uuid: str,
        values: dict[str, Any],
        event: dict[str, Any] | None = None,
        finish_action: bool = False,
        fault: str | None = None,
        expect_vm_state: str | None = None,
        build_attempt: int | None = None,
    ) -> bool:
        """Apply an agent's instance change (with its action event) in one transaction.

        With ``expect_vm_state`` the change applies only if the instance is still in that
        state (a finished build must not revive an instance the watchdog already failed);
        with ``build_attempt`` only if the build is still that attempt.
        """
        # An agent changes only instances on its own host: the UPDATE expects it, and when the
        # UPDATE changes nothing the row tells why (another host's instance: refused, and the
        # event and fault below roll back with the transaction).
        own = None if is_controller(ctx.sender) else agent_host(ctx.sender)
        bad = set(values) - AGENT_WRITABLE
        if bad:
            raise ValueError(f"agents may not set {', '.join(sorted(bad))}")
        changes = {k: (parse_iso(v) if k.endswith("_at") and isinstance(v, str) else v) for k, v in values.items()}
        expect: dict[str, Any] = {"deleted": False}
        if expect_vm_state is not None:
            expect["vm_state"] = expect_vm_state
        if build_attempt is not None:
            expect["build_attempt"] = int(build_attempt)
        if own is not None:
            expect["host"] = own
        action_started = None
        async with self.rt.db.begin() as conn:
            changed = await records.update_instance(conn, instance_uuid, expect=expect, **changes)
            if own is not None and not changed:
                row = await records.get_instance(conn, instance_uuid)
                require_host(ctx, row.host if row is not None else None, f"instance_update of {instance_uuid}")
            event_rid = (event.get("request_id") or ctx.request_id) if event else None
            if event:
                action_started = await actions.record_event(
                    conn,
                    instance_uuid,
                    event_rid or ctx.request_id,
                    event["event"],
                    start_time=parse_iso(event["start_time"]) if event.get("start_time") else None,
                    finish_time=utcnow(),
                    result=event.get("result"),
                    traceback=event.get("traceback"),
                    host=event.get("host"),
                    finish=finish_action and event_rid == ctx.request_id,
                )
            if fault:
                await records.add_fault(conn, instance_uuid, fault, host=(event or {}).get("host"))
            if finish_action and event_rid != ctx.request_id:
                await actions.finish_action(conn, instance_uuid, ctx.request_id)
        if changed and expect_vm_state == states.BUILDING and values.get("vm_state") == states.ACTIVE:
            # create→ACTIVE from the create action's start (the API request), as Nova's
            # instance action shows it: no extra read of the instance per build.
            launched = changes.get("launched_at")
            seconds = (launched - action_started).total_seconds() if launched and action_started else None
            self.rt.metrics.observe_build("active", seconds)
        if event:
            self._count_action(event)
        return changed

    def _count_action(self, event: dict[str, Any]) -> None:
        """novalite_server_actions_total and its duration, from the event's start on the host."""
        start = parse_iso(event["start_time"]) if event.get("start_time") else None
        seconds = (utcnow() - start).total_seconds() if start else None
        self.rt.metrics.observe_server_action(event["event"], event.get("result"), seconds)

    async def instance_destroyed(self, ctx: RequestContext, instance_uuid: str, host: str) -> None:
        """The agent removed the guest: free its resources and mark the instance deleted."""
        require_host(ctx, host, "instance_destroyed")
        async with self.rt.db.begin() as conn:
            row = await records.get_instance(conn, instance_uuid, lock=True)
            if row is None or row.deleted or row.host != host:
                log.warning("conductor.destroyed_elsewhere", instance=instance_uuid, host=host)
                return
            groups = await records.finalize_delete(conn, instance_uuid)
            # Its ports left their groups: the other guests' rules follow (issue 12).
            for topic, args in await server_ports.port_security_updates(conn, group_ids=groups):
                await cast_after_commit(conn, ctx, topic, "update_port_security", **args)
            deleting_since = await actions.record_event(
                conn,
                instance_uuid,
                ctx.request_id,
                "compute_terminate_instance",
                finish_time=utcnow(),
                result="Success",
                host=host,
            )
            await actions.finish_action(conn, instance_uuid, ctx.request_id)
        # The agent reports no start of its destroy: a delete is timed from its request.
        seconds = (utcnow() - deleting_since).total_seconds() if deleting_since else None
        self.rt.metrics.observe_server_action("compute_terminate_instance", "Success", seconds)

    async def interface_attach_failed(self, ctx: RequestContext, instance_uuid: str, host: str, port_id: str) -> None:
        """The hypervisor refused a NIC the API attached (issue 12): undo the attach, as Nova
        does (the user's port unbound, a port made for it deleted)."""
        require_host(ctx, host, "interface_attach_failed")
        async with self.rt.db.begin() as conn:
            row = await records.get_instance(conn, instance_uuid, lock=True)
            if row is None or row.deleted or row.host != host:
                return
            for port in await server_ports.server_ports(conn, instance_uuid):
                if port.id == port_id:
                    await server_ports.unbind_or_delete(conn, port)
                    await records.update_instance(conn, instance_uuid)  # its view shows the ports

    async def image_tickets(self, ctx: RequestContext, instance_uuid: str, host: str) -> dict[str, str]:
        """Download tickets for the images an instance on ``host`` boots from (its image, kernel,
        ramdisk): what the agent shows the image API instead of the user's token."""
        require_host(ctx, host, "image_tickets")
        async with self.rt.db.connect() as conn:
            row = await records.get_instance(conn, instance_uuid)
        if row is None or row.deleted or row.host != host:
            raise PermissionError(f"instance {instance_uuid} is not on host {host}")
        if not row.image_ref:
            return {}
        props = (row.image_meta or {}).get("properties") or {}
        ids = [row.image_ref, *(props[k] for k in ("kernel_id", "ramdisk_id") if props.get(k))]
        key = await tickets.ticket_key(self.rt)
        ttl = self.settings.image_ticket_ttl
        return {i: tickets.mint_image_ticket(key, i, row.project_id, ttl) for i in ids}

    async def instances_on_host(self, ctx: RequestContext, host: str) -> list[dict[str, Any]]:
        """What the database says should live on ``host`` (for the agent's reconciliation)."""
        require_host(ctx, host, "instances_on_host")
        async with self.rt.db.connect() as conn:
            return [await records.payload_from_row(conn, row) for row in await records.instances_on_host(conn, host)]

    async def sync_power_states(self, ctx: RequestContext, host: str, power_states: dict[str, int]) -> None:
        """Record the hypervisor's view: the power state, and the vm_state it implies."""
        require_host(ctx, host, "sync_power_states")
        if not power_states:
            return
        async with self.rt.db.begin() as conn:
            for row in await records.instances_on_host(conn, host, uuids=list(power_states)):
                power = int(power_states[row.uuid])
                if row.task_state is not None:
                    continue  # an operation is under way; it will set the state when it ends
                values: dict[str, Any] = {}
                if power != row.power_state:
                    values["power_state"] = power
                new_state = vm_state_for_power(row.vm_state, power)
                if new_state != row.vm_state:
                    values["vm_state"] = new_state
                    log.info(
                        "conductor.vm_state_synced",
                        instance=row.uuid,
                        power_state=power,
                        old=row.vm_state,
                        new=new_state,
                    )
                if values:
                    await records.update_instance(conn, row.uuid, **values)

    # -- periodic -----------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        host = self.settings.host or socket.gethostname()
        while True:
            try:
                async with self.rt.db.begin() as conn:
                    await hosts.upsert_service(conn, host, "nova-conductor", "conductor", "internal")
            except Exception:
                log.exception("conductor.report_failed")
            await asyncio.sleep(self.settings.report_interval)

    async def _build_watchdog(self) -> None:
        interval = max(1.0, min(self.settings.report_interval, 30.0))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_stuck_builds()
            except Exception:
                log.exception("conductor.watchdog_failed")

    async def check_stuck_builds(self, ctx: RequestContext | None = None) -> list[str]:
        """Put builds in ERROR that exceeded ``build_timeout`` or whose host is down."""
        if ctx is not None:
            require_controller(ctx, "run the build watchdog")
        now = utcnow()
        timeout_before = now - timedelta(seconds=self.settings.build_timeout)
        failed: list[tuple[str, str, str | None]] = []
        async with self.rt.db.connect() as conn:
            rows = await records.building_instances(conn)
            if not rows:
                return []
            services = {s.host: s for s in await hosts.list_services(conn, binary=hosts.COMPUTE_BINARY)}
        for row in rows:
            if row.created_at <= timeout_before:
                failed.append(
                    (
                        row.uuid,
                        f"Build of instance {row.uuid} aborted: timed out after "
                        f"{self.settings.build_timeout:g} seconds.",
                        row.host,
                    )
                )
            elif row.host and row.host in services and self._host_down(services[row.host], now):
                failed.append(
                    (row.uuid, f"Build of instance {row.uuid} aborted: compute host {row.host} went down.", row.host)
                )
        for uuid, message, host in failed:
            async with self.rt.db.begin() as conn:
                # Only if it is still building where we saw it: a build that just finished
                # or was rescheduled meanwhile keeps its claim.
                aborted = await records.update_instance(
                    conn,
                    uuid,
                    expect={"vm_state": states.BUILDING, "host": host},
                    vm_state=states.ERROR,
                    task_state=None,
                )
                if aborted:
                    self.rt.metrics.observe_build("error")
                    await placement.release(conn, uuid)
                    await records.add_fault(conn, uuid, message, host=host)
            if aborted:
                log.warning("conductor.build_aborted", instance=uuid, reason=message)
        return [f[0] for f in failed]

    def _host_down(self, service: Any, now: Any) -> bool:
        """Is the build's host down? Not before it had ``service_down_time`` to report to this
        conductor: right after a restart every host's last heartbeat is old (the crash soak
        aborted builds whose in-process agents had not yet reported again)."""
        down_time = self.settings.service_down_time
        if service.forced_down:
            return True
        if (now - self._started_at).total_seconds() <= down_time:
            return False
        return not is_up(service, down_time, now)


def scheduling_failure(exc: RemoteError) -> str:
    """The fault message of a build the scheduler could not place."""
    return NO_VALID_HOST if exc.exc_type == "NoValidHost" else f"Scheduling failed: {exc.message}"


def spec_from_row(row: Any, ignore_hosts: list[str]) -> dict[str, Any]:
    """The request spec of an instance's build, rebuilt from its row (to reschedule it)."""
    return {
        "instance_uuid": row.uuid,
        "project_id": row.project_id,
        "flavor": row.flavor,
        "image": {"id": row.image_ref, **(row.image_meta or {})},
        "availability_zone": row.requested_az,
        "ignore_hosts": ignore_hosts,
        **{k: v for k, v in (row.scheduler_hints or {}).items() if k == "force_host"},
    }


def vm_state_for_power(vm_state: str, power: int) -> str:
    """The vm_state the hypervisor's power state implies, for an instance with no task under way.

    A guest that shut itself down is SHUTOFF; one found running is ACTIVE; paused is PAUSED.
    A suspended guest is off on the hypervisor (its memory is saved), so off keeps SUSPENDED.
    Building, error and deleted instances are left to their own paths.
    """
    if vm_state not in (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED):
        return vm_state
    if power == 1:
        return states.ACTIVE
    if power == 3:
        return states.PAUSED
    if power == 7:
        return states.SUSPENDED
    if power in (0, 4, 6):
        return states.SUSPENDED if vm_state == states.SUSPENDED else states.STOPPED
    return vm_state
