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


class RAMWeigher(BaseWeigher):
    setting = "ram_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free(placement.MEMORY_MB)


class CPUWeigher(BaseWeigher):
    setting = "cpu_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free(placement.VCPU)


class DiskWeigher(BaseWeigher):
    setting = "disk_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free(placement.DISK_GB)


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
        if weigher.multiplier == 0:
            continue
        for i, value in enumerate(normalize([weigher.weigh(h, spec) for h in hosts])):
            totals[i] += weigher.multiplier * value
    order = sorted(range(len(hosts)), key=lambda i: totals[i], reverse=True)
    return [(hosts[i], totals[i]) for i in order]


def weigh_hosts(hosts: list[HostState], spec: RequestSpec, weighers: list[BaseWeigher]) -> list[HostState]:
    """The hosts alone, highest weight first."""
    return [h for h, _ in weighed_hosts(hosts, spec, weighers)]
