"""The compute agent: drives one host's hypervisor driver on behalf of the control plane.

It serves the bus topic ``compute.<host>``, runs each operation on its driver, and
reports the outcome — instance states, action events, faults, heartbeats, resources —
to the conductor over the bus. It has no database access at all: this module and
everything it imports stay clear of ``novalite.db`` (an import contract in CI),
so a compromised hypervisor host holds no database credentials.

Operations on one instance are serialized by a per-instance lock; operations on
different instances run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import traceback as tb
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from novalite_drivers.base import ComputeDriver, DriverError, Instance, InstanceNotFound, Port, PowerState

from novalite import states
from novalite.agent.drivers import load_driver
from novalite.agent.imagecache import Credentials, cache_dir, fetch_image, image_ids
from novalite.agent.metrics import guest_counts, timed_driver
from novalite.agent.moves import MoveOperations
from novalite.agent.snapshots import ImageOperations
from novalite.bus import BusError
from novalite.bus.identity import is_controller
from novalite.context import RequestContext
from novalite.log import bind_request_id, get_logger
from novalite.runtime import Runtime
from novalite.tasks import cancel_and_wait

log = get_logger("novalite.compute")

BINARY = "nova-compute"
#: The action event of a build (Nova's name, shown by ``openstack server event show``).
BUILD_EVENT = "compute__do_build_and_run_instance"
#: How many heartbeats pass between two resource reports.
RESOURCE_REPORT_EVERY = 6
#: How often the agent tries to report an operation's outcome (the report ends its task state).
OUTCOME_REPORT_ATTEMPTS = 5



def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


class ComputeAgent(MoveOperations, ImageOperations):
    def __init__(
        self, rt: Runtime, host: str, driver: ComputeDriver | None = None, options: dict[str, Any] | None = None
    ) -> None:
        self.rt = rt
        self.host = host
        self.topic = f"compute.{host}"
        settings = rt.settings
        options = settings.driver_options if options is None else options
        # Every driver call is timed here, once, for novalite_driver_call_duration_seconds.
        self.driver = timed_driver(driver or load_driver(settings.driver, host, options), rt.metrics.agent)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.conductor_timeout = settings.rpc_timeout

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.driver.init_host()
        self.driver.set_lifecycle_callback(self._on_lifecycle_event)
        ctx = RequestContext.admin()
        with bind_request_id(ctx.request_id):
            await self._register(ctx)
            # Commands come from controllers only: another host's agent (its broker login
            # is novalite-agent-<host>) may publish to this queue's exchange, not command us.
            await self.rt.bus.serve(self.topic, self, accept=is_controller)
            await self.reconcile(ctx)
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._power_sync_loop()),
        ]
        log.info("compute.started", host=self.host, driver=self.driver.name)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        await self._close_transfers()  # the receiver of moved disks (issue 10), if it listens
        await self.driver.cleanup_host()

    async def _register(self, ctx: RequestContext) -> None:
        """Report the service and the node; wait for a conductor if none answers yet."""
        delay = 0.5
        while True:
            try:
                await self._report(ctx, resources=True)
                return
            except BusError as exc:
                log.warning("compute.conductor_unreachable", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _report(self, ctx: RequestContext, resources: bool) -> None:
        timeout = max(self.rt.settings.report_interval, 5.0)
        await self.rt.bus.call(
            ctx,
            "conductor",
            "report_service",
            host=self.host,
            binary=BINARY,
            availability_zone=self.rt.settings.availability_zone,
            timeout=timeout,
        )
        if resources:
            res = await self.driver.get_host_resources()
            await self.rt.bus.call(
                ctx,
                "conductor",
                "report_compute_node",
                host=self.host,
                resources={
                    "vcpus": res.vcpus,
                    "memory_mb": res.memory_mb,
                    "local_gb": res.local_gb,
                    "hypervisor_type": res.hypervisor_type,
                    "hypervisor_version": res.hypervisor_version,
                    "hypervisor_hostname": res.hypervisor_hostname or self.host,
                    "cpu_info": res.cpu_info,
                    "host_ip": res.host_ip,
                },
                timeout=timeout,
            )

    async def _heartbeat_loop(self) -> None:
        count = 0
        while True:
            await asyncio.sleep(self.rt.settings.report_interval)
            count += 1
            ctx = RequestContext.admin()
            with bind_request_id(ctx.request_id):
                try:
                    await self._report(ctx, resources=count % RESOURCE_REPORT_EVERY == 0)
                except BusError as exc:
                    log.warning("compute.heartbeat_failed", error=str(exc))
                except Exception:
                    log.exception("compute.heartbeat_crashed")

    async def _power_sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rt.settings.sync_power_state_interval)
            ctx = RequestContext.admin()
            with bind_request_id(ctx.request_id):
                try:
                    await self.sync_power_states(ctx)
                except Exception as exc:
                    log.warning("compute.power_sync_failed", error=repr(exc))

    # -- reconciliation -----------------------------------------------------------------------

    async def _conductor(self, ctx: RequestContext, method: str, **args: Any) -> Any:
        return await self.rt.bus.call(ctx, "conductor", method, timeout=self.conductor_timeout, **args)

    async def _record(
        self,
        ctx: RequestContext,
        uuid: str,
        event: str,
        started: str,
        values: dict[str, Any],
        error: BaseException | str | None = None,
        **update: Any,
    ) -> Any:
        """``conductor.instance_update`` with the action event of one operation: Success, or
        Error with the traceback (an exception, or a message when there is no traceback)."""
        record: dict[str, Any] = {"event": event, "start_time": started, "host": self.host}
        if error is None:
            record["result"] = "Success"
        else:
            record["result"] = "Error"
            record["traceback"] = error if isinstance(error, str) else "".join(tb.format_exception(error))
        return await self._conductor(ctx, "instance_update", instance_uuid=uuid, values=values, event=record, **update)

    async def reconcile(self, ctx: RequestContext) -> None:
        """Compare the database's view of this host with the hypervisor's, at start.

        Guests the database does not know are logged, never destroyed: they may be an
        operator's, or belong to a database restored from backup.
        """
        # Servers evacuated away while this host was down: their old guests go first (issue 10).
        await self.destroy_evacuated_guests(ctx)
        expected = await self._conductor(ctx, "instances_on_host", host=self.host)
        present = set(await self.driver.list_instances())
        known = {inst["uuid"] for inst in expected}
        for uuid in sorted(present - known):
            log.warning(
                "compute.unknown_guest", instance=uuid, host=self.host, hint="not in the database; left untouched"
            )
        power: dict[str, int] = {}
        for inst in expected:
            uuid = inst["uuid"]
            if inst.get("task_state") in states.POWER_TASKS:
                # The operation's message died with the previous agent (or the whole all-in-one
                # process): end the task, and let the power sync below say what the guest is.
                log.warning("compute.stale_task_cleared", instance=uuid, task_state=inst["task_state"])
                await self._conductor(ctx, "instance_update", instance_uuid=uuid, values={"task_state": None})
            if inst.get("task_state") == states.DELETING:
                await self.terminate_instance(ctx, inst)
                continue
            if self.is_image_task(inst):
                await self.image_task_interrupted(ctx, inst)  # issue 11: a snapshot/rebuild/shelve died with us
            if inst["vm_state"] == states.BUILDING:
                # A build this agent died in: its message comes back (the broker redelivers
                # what a dead consumer held; in one process the conductor re-sends it at
                # start), and the build starts over, or is dropped as stale if the build
                # was failed meanwhile. Nothing to decide here.
                log.info("compute.build_interrupted", instance=uuid, present=uuid in present)
                continue
            if uuid not in present:
                log.warning("compute.guest_missing", instance=uuid, vm_state=inst["vm_state"])
                power[uuid] = int(PowerState.NOSTATE)
                continue
            with contextlib.suppress(DriverError):
                power[uuid] = int(await self.driver.get_power_state(Instance.from_dict(inst)))
        if power:
            await self._conductor(ctx, "sync_power_states", host=self.host, power_states=power)

    async def sync_power_states(self, ctx: RequestContext) -> None:
        power: dict[str, int] = {}
        for uuid in await self.driver.list_instances():
            with contextlib.suppress(DriverError):
                power[uuid] = int(await self.driver.get_power_state(Instance(uuid=uuid, name="")))
        self.rt.metrics.agent.observe_guests(self.host, guest_counts(power))
        await self._conductor(ctx, "sync_power_states", host=self.host, power_states=power)

    async def _on_lifecycle_event(self, uuid: str, state: PowerState) -> None:
        ctx = RequestContext.admin()
        with bind_request_id(ctx.request_id):
            log.info("compute.lifecycle_event", instance=uuid, power_state=state.name)
            if uuid in self._locks and self._locks[uuid].locked():
                return  # our own operation caused it; it reports the final state itself
            try:
                await self._conductor(ctx, "sync_power_states", host=self.host, power_states={uuid: int(state)})
            except BusError as exc:
                log.warning("compute.lifecycle_report_failed", error=str(exc))

    # -- operations (bus methods) ----------------------------------------------------------------

    def _lock(self, uuid: str) -> asyncio.Lock:
        lock = self._locks.get(uuid)
        if lock is None:
            lock = self._locks[uuid] = asyncio.Lock()
        return lock

    async def _operate(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        event: str,
        work: Callable[[Instance], Awaitable[None]],
        vm_state: str,
        failed_vm_state: Callable[[int | None], str | None] | None = None,
    ) -> bool:
        """Run ``work`` under the instance's lock; report the result with its action event.

        On success the instance takes ``vm_state``; either way its power state is what the
        hypervisor says afterwards, not what the operation was supposed to achieve.

        On failure (Nova's ``reverts_task_state`` + ``wrap_instance_fault`` +
        ``wrap_instance_event``): the task state is cleared, an instance fault is added and
        the action event is Error with the traceback. The vm_state stays, unless
        ``failed_vm_state`` (given the power state found afterwards, None if unknown) names
        another one, as Nova's reboot puts a guest that is not running in ERROR. Whatever
        fails — the driver, or reading the instance — ends the task: nothing is left in a
        task state for the next agent start to clean up.
        """
        uuid = instance["uuid"]
        started = now_iso()
        t0 = time.perf_counter()
        async with self._lock(uuid):
            inst: Instance | None = None
            try:
                inst = Instance.from_dict(instance)
                await work(inst)
            except Exception as exc:
                message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
                log.warning("compute.operation_failed", instance=uuid, action_event=event, error=message)
                values: dict[str, Any] = {"task_state": None}
                power = await self._power_after(inst)
                if power is not None:
                    values["power_state"] = power
                new_state = failed_vm_state(power) if failed_vm_state is not None else None
                if new_state is not None:
                    values["vm_state"] = new_state
                await self._record_outcome(ctx, uuid, event, started, values, exc, fault=message)
                return False
            values = {"vm_state": vm_state, "task_state": None, "power_state": int(PowerState.NOSTATE)}
            with contextlib.suppress(DriverError):
                values["power_state"] = int(await self.driver.get_power_state(inst))
            await self._record_outcome(ctx, uuid, event, started, values)
        log.info(
            "compute.operation_done", instance=uuid, action_event=event, ms=round((time.perf_counter() - t0) * 1000, 1)
        )
        return True

    async def _power_after(self, inst: Instance | None) -> int | None:
        """The guest's power state after a failed operation: NOSTATE if the hypervisor has no
        guest (the database must not keep saying RUNNING), None if it cannot tell."""
        if inst is None:
            return None
        try:
            return int(await self.driver.get_power_state(inst))
        except InstanceNotFound:
            return int(PowerState.NOSTATE)
        except Exception:
            return None

    async def _record_outcome(
        self,
        ctx: RequestContext,
        uuid: str,
        event: str,
        started: str,
        values: dict[str, Any],
        error: BaseException | None = None,
        fault: str | None = None,
    ) -> None:
        """Report an operation's end, retrying while the conductor is unreachable: this
        report is what clears the task state, so giving up at once would leave the server
        in its task state until the agent restarts."""
        delay = 0.5
        for attempt in range(1, OUTCOME_REPORT_ATTEMPTS + 1):
            try:
                await self._record(ctx, uuid, event, started, values, error, finish_action=True, fault=fault)
                return
            except BusError as exc:
                if attempt == OUTCOME_REPORT_ATTEMPTS:
                    log.error("compute.outcome_report_lost", instance=uuid, action_event=event, error=str(exc))
                    return
                log.warning("compute.outcome_report_retry", instance=uuid, error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _prepare_recreate(self, ctx: RequestContext, instance: dict[str, Any]) -> Instance:
        """The instance for an operation that recreates a lost guest (hard reboot, start).

        A driver that boots from local image files needs them to rebuild a missing root
        disk: fetch them (cached) only when the hypervisor lacks the guest. Best effort:
        the guest's disks may still be there, and the driver says clearly if it cannot
        recreate the guest without the image.
        """
        inst = Instance.from_dict(instance)
        if not (self.driver.needs_image_file and inst.image is not None):
            return inst
        try:
            await self.driver.get_power_state(inst)
            return inst
        except InstanceNotFound:
            pass
        except DriverError:
            return inst
        try:
            await self.prepare_image(ctx, inst)
        except Exception as exc:
            log.warning("compute.recreate_image_unavailable", instance=inst.uuid, error=repr(exc))
        return inst

    async def build_and_run_instance(
        self, ctx: RequestContext, instance: dict[str, Any], request_spec: dict[str, Any] | None = None
    ) -> None:
        uuid = instance["uuid"]
        attempt = instance.get("build_attempt")  # absent in a 1.x message
        started = now_iso()
        async with self._lock(uuid):
            inst = Instance.from_dict(instance)
            # A build message can be stale: redelivered after this agent died holding it,
            # queued while the host was down, or sent twice, and the build failed, finished
            # or moved on meanwhile.
            if not await self._conductor(
                ctx, "build_start", instance_uuid=uuid, host=self.host, build_attempt=attempt
            ):
                log.warning("compute.stale_build_dropped", instance=uuid, host=self.host, build_attempt=attempt)
                return
            try:
                if uuid in set(await self.driver.list_instances()):
                    # What an interrupted run of this same build left (the agent died in
                    # spawn): the build starts over from a clean hypervisor.
                    log.warning("compute.interrupted_build_cleanup", instance=uuid)
                    await self.driver.destroy(inst)
                if self.driver.needs_image_file and inst.image is not None:
                    await self.prepare_image(ctx, inst)
                await self.driver.spawn(inst)
                power = int(await self.driver.get_power_state(inst))
            except Exception as exc:
                message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
                log.warning("compute.build_failed", instance=uuid, error=message)
                with contextlib.suppress(Exception):
                    await self.driver.destroy(inst)
                await self._record(ctx, uuid, BUILD_EVENT, started, {}, exc)
                await self._conductor(
                    ctx,
                    "build_failed",
                    instance_uuid=uuid,
                    host=self.host,
                    message=message,
                    reschedule=True,
                    build_attempt=attempt,
                )
                return
            active = {"vm_state": states.ACTIVE, "task_state": None, "power_state": power, "launched_at": now_iso()}
            updated = await self._record(
                ctx,
                uuid,
                BUILD_EVENT,
                started,
                active,
                expect_vm_state=states.BUILDING,
                build_attempt=attempt,
                finish_action=True,
            )
            if not updated:
                # Deleted (or failed by the build watchdog) while we built it: do not leave
                # an orphan guest behind; the guest is ours, we just made it.
                log.info("compute.built_deleted_instance", instance=uuid)
                await self.driver.destroy(inst)

    async def prepare_image(self, ctx: RequestContext, inst: Instance) -> None:
        """Fetch the image into this host's cache (drivers that need a local file), with
        tickets the conductor mints for this instance's images on this host."""
        if not any(not (cache_dir(self.rt.settings) / i).exists() for i in image_ids(inst)):
            await fetch_image(self.rt.settings, Credentials({}), inst)  # all cached: no download
            return
        tickets = await self._conductor(ctx, "image_tickets", instance_uuid=inst.uuid, host=self.host)
        await fetch_image(self.rt.settings, Credentials(dict(tickets)), inst)

    async def stop_instance(self, ctx: RequestContext, instance: dict[str, Any], clean_shutdown: bool = True) -> None:
        timeout = 60.0 if clean_shutdown else 0.0
        work = functools.partial(self.driver.power_off, timeout=timeout)
        await self._operate(ctx, instance, "compute_stop_instance", work, states.STOPPED)

    async def soft_delete_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """Power the guest off for a soft delete (``reclaim_instance_interval`` > 0): it ends
        SOFT_DELETED, guest and disks kept, until a restore or the conductor's reclaim."""
        work = functools.partial(self.driver.power_off, timeout=60.0)
        await self._operate(ctx, instance, "compute_soft_delete_instance", work, states.SOFT_DELETED)

    async def start_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """Power on; a guest the hypervisor lost is recreated (the driver's contract, Nova's
        libvirt behaviour), so a start after a host restart brings the server back."""

        async def work(_inst: Instance) -> None:
            await self.driver.power_on(await self._prepare_recreate(ctx, instance))

        await self._operate(ctx, instance, "compute_start_instance", work, states.ACTIVE)

    async def reboot_instance(self, ctx: RequestContext, instance: dict[str, Any], reboot_type: str = "SOFT") -> None:
        """Reboot; HARD recreates a lost guest from the instance's definition (Nova's
        ``_hard_reboot``). A failed reboot leaves a guest that still runs ACTIVE (with the
        fault), any other in ERROR, as Nova's ``reboot_instance`` does."""
        hard = reboot_type.upper() == "HARD"

        async def work(inst: Instance) -> None:
            if hard:
                inst = await self._prepare_recreate(ctx, instance)
            await self.driver.reboot(inst, hard=hard)

        def failed(power: int | None) -> str | None:
            return None if power == int(PowerState.RUNNING) else states.ERROR

        await self._operate(ctx, instance, "compute_reboot_instance", work, states.ACTIVE, failed)

    async def pause_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        await self._operate(ctx, instance, "compute_pause_instance", self.driver.pause, states.PAUSED)

    async def unpause_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        await self._operate(ctx, instance, "compute_unpause_instance", self.driver.unpause, states.ACTIVE)

    async def suspend_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        await self._operate(ctx, instance, "compute_suspend_instance", self.driver.suspend, states.SUSPENDED)

    async def resume_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        await self._operate(ctx, instance, "compute_resume_instance", self.driver.resume, states.ACTIVE)

    async def terminate_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        uuid = instance["uuid"]
        async with self._lock(uuid):
            inst = Instance.from_dict(instance)
            try:
                await self.driver.destroy(inst)
            except InstanceNotFound:
                pass
            except Exception as exc:
                message = str(exc)
                log.warning("compute.destroy_failed", instance=uuid, error=message)
                failed = {"vm_state": states.ERROR, "task_state": None}
                await self._record(
                    ctx,
                    uuid,
                    "compute_terminate_instance",
                    now_iso(),
                    failed,
                    message,
                    finish_action=True,
                    fault=message,
                )
                return
            await self._conductor(ctx, "instance_destroyed", instance_uuid=uuid, host=self.host)
        self._locks.pop(uuid, None)

    # -- network interfaces (issue 12) ------------------------------------------------------

    async def attach_interface(self, ctx: RequestContext, instance: dict[str, Any], port: dict[str, Any]) -> None:
        """Hot-plug a port the API attached (``os-interface``); the action event says how it went."""
        await self._interface(ctx, instance, port, "compute_attach_interface", self.driver.attach_interface)

    async def detach_interface(self, ctx: RequestContext, instance: dict[str, Any], port: dict[str, Any]) -> None:
        """Unplug a port the API detached (``instance`` no longer lists it)."""
        await self._interface(ctx, instance, port, "compute_detach_interface", self.driver.detach_interface)

    async def _interface(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        port: dict[str, Any],
        event: str,
        work: Callable[[Instance, Port], Awaitable[None]],
    ) -> None:
        uuid = instance["uuid"]
        started = now_iso()
        async with self._lock(uuid):
            try:
                await work(Instance.from_dict(instance), Port(**port))
            except Exception as exc:
                message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
                log.warning(
                    "compute.interface_failed", instance=uuid, action_event=event, port=port.get("id"), error=message
                )
                if event == "compute_attach_interface":
                    try:  # Nova's rollback: the server does not keep a NIC its guest lacks
                        await self._conductor(
                            ctx, "interface_attach_failed", instance_uuid=uuid, host=self.host, port_id=port.get("id")
                        )
                    except BusError as report_exc:
                        log.warning("compute.interface_rollback_failed", instance=uuid, error=str(report_exc))
                await self._record_outcome(ctx, uuid, event, started, {}, exc, fault=message)
                return
            await self._record_outcome(ctx, uuid, event, started, {})
        log.info("compute.interface_done", instance=uuid, action_event=event, port=port.get("id"))

    async def update_port_security(self, ctx: RequestContext, instance: dict[str, Any], port: dict[str, Any]) -> None:
        """Apply a port's new security now (a rule of one of its groups added or removed, a
        group added to or removed from it, port security or address pairs changed): ``port``
        is the driver's ``Port`` as plain JSON, rules already resolved to addresses.

        Not under the instance's lock, on purpose: the rules must hold within a second, even
        while a long operation (a build, a migration) runs on the server. Failures are logged
        (the next update, or the next plug, brings the host back in line)."""
        known = set(Port.__dataclass_fields__)
        try:
            await self.driver.update_port_security(
                Instance.from_dict(instance), Port(**{k: v for k, v in port.items() if k in known})
            )
        except Exception as exc:
            log.warning(
                "compute.port_security_failed", instance=instance.get("uuid"), port=port.get("id"), error=str(exc)
            )
            return
        log.info("compute.port_security_applied", instance=instance.get("uuid"), port=port.get("id"))

    async def set_overlay_peers(self, ctx: RequestContext, network_id: str, vni: int, peers: list[str]) -> None:
        """The other hosts' tunnel endpoints for a VXLAN network (the whole list, see
        :meth:`ComputeDriver.set_overlay_peers`). Failures are logged."""
        try:
            await self.driver.set_overlay_peers(network_id, int(vni), [str(p) for p in peers])
        except Exception as exc:
            log.warning("compute.overlay_peers_failed", network=network_id, error=str(exc))

    async def get_console_output(self, ctx: RequestContext, instance: dict[str, Any]) -> str:
        return await self.driver.get_console_output(Instance.from_dict(instance))

    async def get_vnc_console(self, ctx: RequestContext, instance: dict[str, Any]) -> dict[str, Any]:
        address = await self.driver.get_vnc_console(Instance.from_dict(instance))
        return {"host": address.host, "port": address.port, "protocol": address.protocol}
