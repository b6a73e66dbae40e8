"""Scheduler weighers: rank the hosts that passed the filters.

Each weigher gives a raw value per host; values are normalized to 0..1 across the
candidates and multiplied by the weigher's multiplier, and the sums rank the hosts,
highest first. Positive multipliers spread instances (prefer the emptiest host),
negative ones stack them — Nova's convention.
"""

from __future__ import annotations

from typing import Any

from novalite.scheduler.hoststate import HostState, RequestSpec
from novalite.store import placement


class BaseWeigher:
    setting = ""

    def __init__(self, settings: Any = None) -> None:
        self.multiplier = float(getattr(settings, self.setting, 1.0)) if settings is not None else 1.0

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        raise NotImplementedError

    def weigh_all(self, hosts: list[HostState], spec: RequestSpec) -> list[float]:
        """Every host's raw value, in order (a weigher may do it in one pass)."""
        return [self.weigh(h, spec) for h in hosts]


class FreeResourceWeigher(BaseWeigher):
    """The host's free amount of one resource class (with its allocation ratio)."""

    resource_class = ""

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free(self.resource_class)

    def weigh_all(self, hosts: list[HostState], spec: RequestSpec) -> list[float]:
        # One tight loop instead of two method calls per host: with 10,000 hosts the
        # weighers were most of a decision's time (docs/benchmarks.md).
        rc = self.resource_class
        values: list[float] = []
        append = values.append
        for h in hosts:
            usage = h.usage
            inv = usage.inventories.get(rc)
            append(inv.capacity - usage.used.get(rc, 0) if inv is not None else 0)
        return values


class RAMWeigher(FreeResourceWeigher):
    setting = "ram_weight_multiplier"
    resource_class = placement.MEMORY_MB


class CPUWeigher(FreeResourceWeigher):
    setting = "cpu_weight_multiplier"
    resource_class = placement.VCPU


class DiskWeigher(FreeResourceWeigher):
    setting = "disk_weight_multiplier"
    resource_class = placement.DISK_GB


DEFAULT_WEIGHERS: list[type[BaseWeigher]] = [RAMWeigher, CPUWeigher, DiskWeigher]


def normalize(values: list[float]) -> list[float]:
    """Scale to 0..1; all-equal values all become 0 (they cannot tell hosts apart)."""
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        return [0.0] * len(values)
    return [(v - low) / span for v in values]


def weighed_hosts(
    hosts: list[HostState], spec: RequestSpec, weighers: list[BaseWeigher]
) -> list[tuple[HostState, float]]:
    """Each host with its total weight, highest first (a stable sort: ties keep the input order).

    The weights are returned so that the scheduler can tell which best hosts are tied and
    break the tie at random (``shuffle_best_same_weighed_hosts``): equal hosts get exactly
    equal totals, since they go through the same arithmetic.
    """
    if len(hosts) <= 1:
        return [(h, 0.0) for h in hosts]
    totals = [0.0] * len(hosts)
    for weigher in weighers:
        multiplier = weigher.multiplier
        if multiplier == 0:
            continue
        values = weigher.weigh_all(hosts, spec)
        low, high = min(values), max(values)
        if high == low:
            continue  # normalized, all 0: this weigher cannot tell the hosts apart
        scale = multiplier / (high - low)
        totals = [total + (value - low) * scale for total, value in zip(totals, values, strict=True)]
    order = sorted(range(len(hosts)), key=totals.__getitem__, reverse=True)
    return [(hosts[i], totals[i]) for i in order]


def weigh_hosts(hosts: list[HostState], spec: RequestSpec, weighers: list[BaseWeigher]) -> list[HostState]:
    """The hosts alone, highest weight first."""
    return [h for h, _ in weighed_hosts(hosts, spec, weighers)]
