"""``GET /metrics``: the process's Prometheus metrics, plus the cloud's state read at scrape time.

The counters and histograms live in the runtime's registry (:mod:`novalite.metrics`);
the per-host and per-service gauges are not kept in memory at all: each scrape reads
services, compute nodes, placement usage and servers through the store (and the
connection pool's use from the engine), so whichever
controller is scraped reports the same, current, database truth (and a host that went
quiet shows as down rather than as its last reported value).

The route needs no token (a Prometheus server has none): bind the API to loopback or
firewall the port, or turn it off with ``metrics_enabled = false``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from novalite.api.http import Handler, runtime
from novalite.metrics import Metrics, address_allowed
from novalite.servicegroup import is_up
from novalite.store import hosts as hosts_store
from novalite.store import placement
from novalite.store.metrics import count_instances_by_vm_state
from novalite.timeutil import utcnow

if TYPE_CHECKING:  # the type only: the API reaches the engine through the runtime
    from novalite.db.engine import PoolUsage

#: The route label of a request that matched no route (never the raw path: no ids in labels).
UNMATCHED = "unmatched"

#: Placement resource class -> (metric stem, unit suffix, factor to that base unit): placement
#: counts MB and GB, Prometheus wants bytes.
RESOURCES = {
    placement.VCPU: ("vcpus", "", 1),
    placement.MEMORY_MB: ("memory", "_bytes", 1024 * 1024),
    placement.DISK_GB: ("disk", "_bytes", 1024 * 1024 * 1024),
}


def host_metric_names(base: str, unit: str) -> tuple[str, str, str, str]:
    """Total, reserved, used and allocation-ratio gauge names of one resource."""
    stem = f"novalite_host_{base}"
    return f"{stem}{unit}", f"{stem}_reserved{unit}", f"{stem}_used{unit}", f"{stem}_allocation_ratio"


def route_template(request: web.Request) -> str:
    """The matched resource's canonical path (``/compute/v2.1/servers/{server_id}``)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request and its latency by route template, method and status."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics: Metrics = runtime(request).metrics
        metrics.observe_request(route_template(request), request.method, status, time.perf_counter() - started)


@dataclass
class CloudState:
    """One scrape's read of the database."""

    services: list[Any]
    nodes: list[Any]
    usages: dict[str, placement.ProviderUsage]
    servers: dict[str, int]
    now: datetime
    service_down_time: float
    #: The connection pool as the scrape found it, before its own read took a connection.
    pool: PoolUsage | None = None
    #: SQL statements this process ran (only with ``count_sql_statements``), before this scrape's.
    statements: int | None = None


async def read_state(rt: Any) -> CloudState:
    """Services, compute nodes, placement usage and servers by state, in one read-only connection."""
    pool = rt.db.pool_usage()
    statements = rt.db.statements
    async with rt.db.connect() as conn:
        services = await hosts_store.list_services(conn)
        nodes = await hosts_store.list_compute_node_states(conn)
        usages = await placement.all_usages(conn)
        servers = await count_instances_by_vm_state(conn)
    return CloudState(services, nodes, usages, servers, utcnow(), rt.settings.service_down_time, pool, statements)


class CloudCollector(Collector):
    """Gauges of one :class:`CloudState` (a fresh collector per scrape: nothing is cached)."""

    def __init__(self, state: CloudState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        up = GaugeMetricFamily(
            "novalite_service_up",
            "1 if the service reported within service_down_time and is not forced down, else 0.",
            labels=["host", "binary"],
        )
        age = GaugeMetricFamily(
            "novalite_service_heartbeat_age_seconds",
            "Seconds since the service's last heartbeat.",
            labels=["host", "binary"],
        )
        for s in state.services:
            up.add_metric([s.host, s.binary], 1.0 if is_up(s, state.service_down_time, state.now) else 0.0)
            if s.last_seen_up is not None:
                age.add_metric([s.host, s.binary], max(0.0, (state.now - s.last_seen_up).total_seconds()))
        yield up
        yield age

        labels = ["host", "node"]
        families: dict[str, GaugeMetricFamily] = {}
        for base, unit, _ in RESOURCES.values():
            docs = (
                f"The host's {base} inventory (physical total).",
                f"Of the host's {base}, kept back from guests.",
                f"The host's {base} claimed by servers (placement allocations).",
                f"Overcommit of the host's {base}: capacity is (total - reserved) * ratio.",
            )
            for name, doc in zip(host_metric_names(base, unit), docs, strict=True):
                families[name] = GaugeMetricFamily(name, doc, labels=labels)
        for node in state.nodes:
            usage = state.usages.get(node.uuid)
            if usage is None:
                continue
            values = [node.host, node.hypervisor_hostname]
            for rc, (base, unit, factor) in RESOURCES.items():
                inv = usage.inventories.get(rc)
                if inv is None:
                    continue
                total, reserved, used, ratio = host_metric_names(base, unit)
                families[total].add_metric(values, inv.total * factor)
                families[reserved].add_metric(values, inv.reserved * factor)
                families[used].add_metric(values, usage.used.get(rc, 0) * factor)
                families[ratio].add_metric(values, inv.allocation_ratio)
        yield from families.values()

        servers = GaugeMetricFamily("novalite_servers", "Servers (not deleted) by vm_state.", labels=["vm_state"])
        for vm_state, count in sorted(state.servers.items()):
            servers.add_metric([vm_state], count)
        yield servers
        if state.pool is not None:
            yield from pool_metrics(state.pool)
        if state.statements is not None:
            statements = CounterMetricFamily(
                "novalite_db_statements",
                "SQL statements this process ran (kept only with count_sql_statements, for benchmarks).",
            )
            statements.add_metric([], float(state.statements))
            yield statements


def pool_metrics(pool: PoolUsage) -> Iterator[Metric]:
    """The database pool's gauges (a ``PoolUsage``), labelled by backend (sqlite, postgresql)."""
    values = [pool.backend]
    for name, doc, value in (
        ("novalite_db_pool_size", "Connections the pool keeps (SQLite: its one connection).", pool.size),
        ("novalite_db_pool_max_overflow", "Connections the pool may open beyond its size.", pool.max_overflow),
        (
            "novalite_db_pool_connections_checked_out",
            "Connections in use by a transaction or read right now (not counting the scrape's own).",
            pool.checked_out,
        ),
        ("novalite_db_pool_overflow", "Connections open beyond the pool's size right now.", pool.overflow),
    ):
        family = GaugeMetricFamily(name, doc, labels=["backend"])
        family.add_metric(values, value)
        yield family


async def metrics_handler(request: web.Request) -> web.Response:
    """The runtime's instruments followed by this scrape's read of the database."""
    rt = runtime(request)
    if not address_allowed(request.remote, rt.settings.metrics_allow_from):
        # Answered here: /metrics sits on the root app, outside the APIs' error middleware.
        message = f"{request.remote} may not read the metrics (metrics_allow_from)"
        return web.json_response({"forbidden": {"code": 403, "message": message}}, status=403)
    state = await read_state(rt)
    body = generate_latest(rt.metrics.registry) + generate_latest(CloudCollector(state))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
