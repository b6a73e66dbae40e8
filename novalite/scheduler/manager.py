"""The scheduler service: filter, weigh, choose, claim.

``select_destinations`` runs the configured filters over every known host, weighs the
survivors, chooses one of the best, and claims the request's resources on it atomically in
the database (see :mod:`novalite.store.placement`). Host states are cached in memory and
refreshed from the database at most every ``CACHE_TTL`` seconds, so one decision costs
O(hosts) in-memory work and one claim transaction, however many hosts there are.

Two forms (both over the bus as ``scheduler.select_destinations``):

* ``select_destinations(ctx, spec)`` places the one instance ``spec["instance_uuid"]`` and
  returns one destination: ``{"host", "node", "provider_uuid", "availability_zone",
  "alternates": [{"host", "node", "provider_uuid"}, ...]}``.
* ``select_destinations(ctx, spec, instance_uuids=[...])`` places a multi-create in one
  decision, as Nova does: one destination per uuid, in the order given (same shape as
  above), each claimed. It is all or nothing: if any instance cannot be placed, the claims
  already made are released and ``NoValidHost`` is raised.

How concurrent decisions stay apart (a storm of 30 on 3 equal hosts ends 10/10/10 with no
lost claims):

* A choice is *consumed* in the shared in-memory view before the claim is awaited, so the
  next decision — concurrent or the next instance of a multi-create — already sees the room
  as taken; a refresh re-applies choices whose claims are still in flight
  (:class:`~novalite.scheduler.hoststate.Reservations`).
* Ties are broken at random (``shuffle_best_same_weighed_hosts``) and the host is picked at
  random among the ``scheduler_host_subset_size`` best (Nova's ``host_subset_size``), so
  equal hosts are not taken in database row order, and schedulers in different processes
  rarely pick the same host.
* Claims of this scheduler on one host are serialized (one lock per host), so they never
  race each other's generation; claims on different hosts run in parallel.
* A claim that finds no room (another process took it) re-reads that host and decides
  again on the updated view, rather than falling to the next host of a stale ranking.

``get_claim_stats`` counts placements and the wasted claim transactions (generation
conflicts plus claims on a host that turned out full): the boot-storm benchmark reports
them per placement.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, overload

from novalite.bus.identity import is_controller
from novalite.context import RequestContext
from novalite.log import get_logger
from novalite.runtime import ControllerRuntime
from novalite.scheduler.filters import DEFAULT_FILTERS, BaseFilter
from novalite.scheduler.hoststate import HostState, RequestSpec, Reservations
from novalite.scheduler.weights import DEFAULT_WEIGHERS, BaseWeigher, weighed_hosts
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


@dataclass
class SchedulerStats:
    """What this scheduler's decisions cost since it started."""

    placements: int = 0
    no_valid_host: int = 0
    claims: placement.ClaimStats = field(default_factory=placement.ClaimStats)
    full_on_claim: int = 0
    """Claims that found the host full although the cached view had room (another scheduler took it)."""

    @property
    def claim_conflicts(self) -> int:
        """Wasted claim transactions: generation conflicts plus claims that found no room."""
        return self.claims.conflicts + self.full_on_claim

    def as_dict(self) -> dict[str, Any]:
        return {
            "placements": self.placements,
            "no_valid_host": self.no_valid_host,
            "claim_transactions": self.claims.transactions,
            "generation_conflicts": self.claims.conflicts,
            "full_on_claim": self.full_on_claim,
            "claim_conflicts": self.claim_conflicts,
            "claim_conflicts_per_placement": round(self.claim_conflicts / self.placements, 3)
            if self.placements
            else 0.0,
        }


class SchedulerManager:
    topic = "scheduler"

    def __init__(
        self,
        rt: ControllerRuntime,
        filters: list[BaseFilter] | None = None,
        weighers: list[BaseWeigher] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.rt = rt
        settings = rt.settings
        self.host_subset_size = settings.scheduler_host_subset_size
        self.shuffle_best = settings.shuffle_best_same_weighed_hosts
        self.random = rng or random.Random()
        self.reservations = Reservations()
        self.stats = SchedulerStats()
        self._claim_locks: dict[str, asyncio.Lock] = {}
        self.filters = filters if filters is not None else [cls() for cls in DEFAULT_FILTERS]
        self.weighers = weighers if weighers is not None else [cls(settings) for cls in DEFAULT_WEIGHERS]
        self.hosts: dict[str, HostState] = {}
        self._loaded_at = 0.0
        self._refresh_lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.rt.bus.serve(self.topic, self, accept=is_controller)  # agents may not place servers
        self._heartbeat = asyncio.create_task(self._report_loop())

    async def stop(self) -> None:
        if self._heartbeat:
            await cancel_and_wait([self._heartbeat])
        log.info("scheduler.claim_stats", **self.stats.as_dict())

    async def get_claim_stats(self, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Placements and wasted claim transactions since start (also callable over the bus)."""
        return self.stats.as_dict()

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
            epoch = self.reservations.snapshot()
            try:
                async with self.rt.db.connect() as conn:
                    usages = await placement.all_usages(conn)
                    rows = await hosts_store.list_compute_node_states(conn)
            except BaseException:
                self.reservations.abandon(epoch)
                raise
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
            # Choices whose claims are in flight are not in these rows yet: keep them taken.
            self.reservations.overlay_all(hosts, epoch)
            self.hosts = hosts
            self._loaded_at = time.monotonic()
            log.debug("scheduler.refreshed", hosts=len(hosts), ms=round((self._loaded_at - started) * 1000, 1))

    # -- the decision -----------------------------------------------------------------------

    def _weighed(self, spec: RequestSpec, exclude: set[str] | None = None) -> list[tuple[HostState, float]]:
        ignore = set(spec.ignore_hosts)
        candidates = [h for h in self.hosts.values() if h.host not in ignore and not (exclude and h.uuid in exclude)]
        for f in self.filters:
            candidates = f.filter_all(candidates, spec)
            if not candidates:
                return []
        return weighed_hosts(candidates, spec, self.weighers)

    def rank(self, spec: RequestSpec) -> list[HostState]:
        """Hosts that pass every filter, best first (ties in cache order: see :meth:`choose`)."""
        return [h for h, _ in self._weighed(spec)]

    def choose(self, weighed: list[tuple[HostState, float]]) -> tuple[HostState, list[HostState]]:
        """The host to claim on, and the rest in order (the alternates): Nova's ``_get_sorted_hosts``.

        With ``shuffle_best_same_weighed_hosts`` the hosts tied at the best weight are
        shuffled; then one of the first ``scheduler_host_subset_size`` is picked at random.
        """
        hosts = [h for h, _ in weighed]
        if self.shuffle_best and len(weighed) > 1:
            best = weighed[0][1]
            tied = sum(1 for _, w in weighed if w == best)
            if tied > 1:
                top = hosts[:tied]
                self.random.shuffle(top)
                hosts[:tied] = top
        subset = min(self.host_subset_size, len(hosts))
        chosen = hosts.pop(self.random.randrange(subset) if subset > 1 else 0)
        return chosen, hosts

    async def _claim(
        self,
        consumer: str,
        host: HostState,
        resources: dict[str, int],
        stats: placement.ClaimStats,
        build_attempt: int | None = None,
    ) -> bool:
        lock = self._claim_locks.setdefault(host.uuid, asyncio.Lock())
        async with lock:  # our own claims on one host never race each other's generation
            return await placement.claim(
                self.rt.db, consumer, host.uuid, resources, stats, build_attempt=build_attempt
            )

    async def _reload_host(self, provider_uuid: str) -> None:
        """Replace one host's cached usage by the database's (plus the choices still in flight)."""
        epoch = self.reservations.snapshot()
        try:
            async with self.rt.db.connect() as conn:
                fresh = await placement.provider_usage(conn, provider_uuid)
        except BaseException:
            self.reservations.abandon(epoch)
            raise
        current = self.hosts.get(provider_uuid)
        if fresh is None or current is None:
            self.reservations.abandon(epoch)
            return
        current.usage = fresh
        self.reservations.overlay_one(current, epoch)

    def _unreserve(self, consumer: str, provider_uuid: str, resources: dict[str, int]) -> None:
        self.reservations.cancel(consumer)
        current = self.hosts.get(provider_uuid)
        if current is not None:
            current.release(resources)

    async def _place(self, request: RequestSpec, alternates: int) -> dict[str, Any]:
        """Choose, consume, then claim one instance; decide again on fresh data if the claim fails.

        Everything up to the first ``await`` is synchronous, so a decision's choice is in the
        shared view before any other decision (or the next instance of a multi-create) runs.
        """
        started = time.perf_counter()
        resources = request.resources
        consumer = request.instance_uuid
        cost = placement.ClaimStats()
        try:
            for attempt in range(2):
                full: set[str] = set()
                while weighed := self._weighed(request, full):
                    host, rest = self.choose(weighed)
                    host.consume(resources)
                    self.reservations.reserve(consumer, host.uuid, resources)
                    try:
                        claimed = await self._claim(consumer, host, resources, cost, request.build_attempt)
                    except BaseException:
                        self._unreserve(consumer, host.uuid, resources)
                        raise
                    if claimed:
                        self.reservations.commit(consumer)
                        self.stats.placements += 1
                        self.rt.metrics.observe_decision(time.perf_counter() - started, placed=True)
                        log.info(
                            "scheduler.selected",
                            instance=consumer,
                            host=host.host,
                            candidates=len(weighed),
                            claim_conflicts=cost.conflicts + len(full),
                            ms=round((time.perf_counter() - started) * 1000, 2),
                        )
                        return {
                            "host": host.host,
                            "node": host.node,
                            "provider_uuid": host.uuid,
                            "availability_zone": host.availability_zone,
                            "alternates": [
                                {"host": h.host, "node": h.node, "provider_uuid": h.uuid} for h in rest[:alternates]
                            ],
                        }
                    # The host was full after all (another scheduler took the room): learn its
                    # real usage and decide again, without it, on the updated view.
                    self.reservations.cancel(consumer)
                    self.stats.full_on_claim += 1
                    full.add(host.uuid)
                    await self._reload_host(host.uuid)
                if attempt == 0:
                    await self.refresh(force=True)  # maybe a host appeared or freed room since the cache was filled
        finally:
            self.stats.claims.transactions += cost.transactions
            self.stats.claims.conflicts += cost.conflicts
        self.stats.no_valid_host += 1
        self.rt.metrics.observe_decision(time.perf_counter() - started, placed=False)
        log.info("scheduler.no_valid_host", instance=consumer, hosts=len(self.hosts))
        raise NoValidHost()

    @overload
    async def select_destinations(
        self, ctx: RequestContext, spec: dict[str, Any], alternates: int = 2, instance_uuids: None = None
    ) -> dict[str, Any]: ...

    @overload
    async def select_destinations(
        self, ctx: RequestContext, spec: dict[str, Any], alternates: int = 2, *, instance_uuids: list[str]
    ) -> list[dict[str, Any]]: ...

    async def select_destinations(
        self,
        ctx: RequestContext,
        spec: dict[str, Any],
        alternates: int = 2,
        instance_uuids: list[str] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Choose and claim a host for one instance, or for each of ``instance_uuids`` (see the module).

        Without ``instance_uuids``: one destination for ``spec["instance_uuid"]``, with
        ``alternates`` runners-up. With it: a list, one destination per uuid in that order,
        all claimed, or none (NoValidHost after releasing what was claimed);
        ``spec["build_attempts"]`` then maps each uuid to its build attempt.

        Raises NoValidHost (a RemoteError of that type at the caller) when nothing fits.
        """
        await self.refresh()
        if instance_uuids is None:
            return await self._place(RequestSpec.from_dict(spec), alternates)
        attempts = spec.get("build_attempts") or {}
        requests = [
            RequestSpec.from_dict(dict(spec, instance_uuid=u, build_attempt=attempts.get(u))) for u in instance_uuids
        ]
        # One decision: each placement's choice is consumed before the next is chosen (the
        # tasks run in order up to their first await), and the claims then run side by side,
        # serialized per host.
        results = await asyncio.gather(*(self._place(r, alternates) for r in requests), return_exceptions=True)
        placed = [(r, d) for r, d in zip(requests, results, strict=True) if isinstance(d, dict)]
        failure = next((d for d in results if isinstance(d, BaseException)), None)
        if failure is None:
            return [d for _, d in placed]
        # All or nothing, as Nova: give back what was claimed, in the database and in the view.
        self.stats.placements -= len(placed)
        async with self.rt.db.begin() as conn:
            for request, _ in placed:
                await placement.release(conn, request.instance_uuid)
        for request, _ in placed:
            self.reservations.cancel(request.instance_uuid)
        for provider in {d["provider_uuid"] for _, d in placed}:
            await self._reload_host(provider)
        log.info("scheduler.no_valid_host", instances=len(requests), placed_then_released=len(placed))
        raise failure
