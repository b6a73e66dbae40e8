"""The scheduler service: filter, weigh, claim.

``select_destinations`` runs the configured filters over every known host, weighs the
survivors, and claims the request's resources on the best host atomically in the
database (see :mod:`novalite.store.placement`). If the claim loses a race, the next host is
tried. Host states are cached in memory and refreshed from the database at most every
``CACHE_TTL`` seconds, so one decision costs O(hosts) in-memory work and one claim
transaction, however many hosts there are.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from novalite.context import RequestContext
from novalite.log import get_logger
from novalite.runtime import ControllerRuntime
from novalite.scheduler.filters import DEFAULT_FILTERS, BaseFilter
from novalite.scheduler.hoststate import HostState, RequestSpec
from novalite.scheduler.weights import DEFAULT_WEIGHERS, BaseWeigher, weigh_hosts
from novalite.servicegroup import is_up
from novalite.store import hosts as hosts_store
from novalite.store import placement
from novalite.tasks import cancel_and_wait

log = get_logger("novalite.scheduler")

CACHE_TTL = 1.0


class NoValidHost(Exception):
    """No host passed the filters or every claim failed."""

    def __init__(self, reason: str = "There are not enough hosts available.") -> None:
        super().__init__(f"No valid host was found. {reason}".strip())


class SchedulerManager:
    topic = "scheduler"

    def __init__(
        self,
        rt: ControllerRuntime,
        filters: list[BaseFilter] | None = None,
        weighers: list[BaseWeigher] | None = None,
    ) -> None:
        self.rt = rt
        settings = rt.settings
        self.filters = filters if filters is not None else [cls() for cls in DEFAULT_FILTERS]
        self.weighers = weighers if weighers is not None else [cls(settings) for cls in DEFAULT_WEIGHERS]
        self.hosts: dict[str, HostState] = {}
        self._loaded_at = 0.0
        self._refresh_lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.rt.bus.serve(self.topic, self)
        self._heartbeat = asyncio.create_task(self._report_loop())

    async def stop(self) -> None:
        if self._heartbeat:
            await cancel_and_wait([self._heartbeat])

    async def _report_loop(self) -> None:
        host = self.rt.settings.host or socket.gethostname()
        while True:
            try:
                async with self.rt.db.begin() as conn:
                    await hosts_store.upsert_service(conn, host, "nova-scheduler", "scheduler", "internal")
            except Exception:
                log.exception("scheduler.report_failed")
            await asyncio.sleep(self.rt.settings.report_interval)

    # -- host state cache ---------------------------------------------------------------

    async def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._loaded_at < CACHE_TTL:
            return
        async with self._refresh_lock:
            if not force and time.monotonic() - self._loaded_at < CACHE_TTL:
                return
            started = time.monotonic()
            async with self.rt.db.connect() as conn:
                usages = await placement.all_usages(conn)
                rows = await hosts_store.list_compute_node_states(conn)
                down_time = self.rt.settings.service_down_time
                hosts = {}
                for r in rows:
                    usage = usages.get(r.uuid)
                    if usage is None:
                        continue
                    hosts[r.uuid] = HostState(
                        uuid=r.uuid,
                        host=r.host,
                        node=r.hypervisor_hostname,
                        availability_zone=r.availability_zone or self.rt.settings.availability_zone,
                        hypervisor_type=r.hypervisor_type,
                        cpu_info=r.cpu_info or {},
                        up=is_up(r, down_time),
                        disabled=bool(r.disabled),
                        usage=usage,
                    )
            self.hosts = hosts
            self._loaded_at = time.monotonic()
            log.debug("scheduler.refreshed", hosts=len(hosts), ms=round((self._loaded_at - started) * 1000, 1))

    # -- the decision -----------------------------------------------------------------------

    def rank(self, spec: RequestSpec) -> list[HostState]:
        """Hosts that pass every filter, best first."""
        ignore = set(spec.ignore_hosts)
        candidates = [h for h in self.hosts.values() if h.host not in ignore] if ignore else list(self.hosts.values())
        for f in self.filters:
            candidates = f.filter_all(candidates, spec)
            if not candidates:
                return []
        return weigh_hosts(candidates, spec, self.weighers)

    async def select_destinations(
        self, ctx: RequestContext, spec: dict[str, Any], alternates: int = 2
    ) -> dict[str, Any]:
        """Choose and claim a host for one instance; return it with ``alternates`` runners-up.

        Raises NoValidHost (a RemoteError of that type at the caller) when nothing fits.
        """
        request = RequestSpec.from_dict(spec)
        started = time.perf_counter()
        await self.refresh()
        for attempt in range(2):
            ranked = self.rank(request)
            for i, host in enumerate(ranked):
                if await placement.claim(self.rt.db, request.instance_uuid, host.uuid, request.resources):
                    host.consume(request.resources)
                    log.info(
                        "scheduler.selected",
                        instance=request.instance_uuid,
                        host=host.host,
                        candidates=len(ranked),
                        ms=round((time.perf_counter() - started) * 1000, 2),
                    )
                    return {
                        "host": host.host,
                        "node": host.node,
                        "provider_uuid": host.uuid,
                        "availability_zone": host.availability_zone,
                        "alternates": [
                            {"host": h.host, "node": h.node, "provider_uuid": h.uuid}
                            for h in ranked[i + 1 : i + 1 + alternates]
                        ],
                    }
                # Lost a race (or our view was stale): take the host's real usage and go on.
                async with self.rt.db.connect() as conn:
                    fresh = await placement.provider_usage(conn, host.uuid)
                if fresh is not None:
                    host.usage = fresh
            if attempt == 0:
                await self.refresh(force=True)  # maybe a host appeared or freed room since the cache was filled
        log.info("scheduler.no_valid_host", instance=request.instance_uuid, hosts=len(self.hosts))
        raise NoValidHost()
