"""What the scheduler knows of a host, and what a request asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from novalite.store import placement
from novalite.store.placement import ProviderUsage


@dataclass
class RequestSpec:
    """One instance to place (plain JSON on the bus: see :meth:`from_dict`)."""

    instance_uuid: str
    project_id: str
    flavor: dict[str, Any]
    image: dict[str, Any] = field(default_factory=dict)
    availability_zone: str | None = None
    force_host: str | None = None
    ignore_hosts: list[str] = field(default_factory=list)
    #: The build attempt this placement is for; the claim is refused once the instance has
    #: moved on to another attempt (a request redelivered after its conductor died).
    build_attempt: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestSpec:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def resources(self) -> dict[str, int]:
        return placement.flavor_resources(self.flavor)

    @property
    def image_properties(self) -> dict[str, Any]:
        return self.image.get("properties") or {}


@dataclass
class HostState:
    uuid: str
    host: str
    node: str
    availability_zone: str
    hypervisor_type: str
    cpu_info: dict[str, Any]
    up: bool
    disabled: bool
    usage: ProviderUsage

    def free(self, rc: str) -> int:
        return self.usage.free(rc)

    def consume(self, resources: dict[str, int]) -> None:
        """Account a placement in the cached view.

        The scheduler calls this as soon as it has chosen the host, before it awaits the
        claim, so that a concurrent decision already sees the room as taken.
        """
        for rc, amount in resources.items():
            self.usage.used[rc] = self.usage.used.get(rc, 0) + amount
        self.usage.generation += 1

    def release(self, resources: dict[str, int]) -> None:
        """Undo :meth:`consume` (the claim was not made after all)."""
        for rc, amount in resources.items():
            self.usage.used[rc] = max(0, self.usage.used.get(rc, 0) - amount)


@dataclass
class Reservations:
    """Placements chosen in memory that a snapshot read from the database may not show yet.

    A refresh replaces the cached host states with what the database holds. Without this,
    a claim still in flight (chosen and consumed in memory, not yet committed) would vanish
    from the view, and the next decisions would pile onto its host again. So every choice
    is *reserved* here until its claim ends; a refresh lays the reservations over the
    fresh rows.

    A claim that commits while a snapshot is being read may or may not be in it. Each
    snapshot therefore takes an epoch when it starts, and a committed claim is kept (with
    the epoch current at its commit) until a snapshot that started after it: such a claim
    is laid over every snapshot that might have missed it. At worst a claim is counted
    twice until the next refresh (a conservative error: it only makes a host look fuller);
    it is never counted zero times.
    """

    pending: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)
    committed: dict[str, tuple[str, dict[str, int], int]] = field(default_factory=dict)
    epoch: int = 0
    reading: set[int] = field(default_factory=set)

    def reserve(self, consumer: str, provider: str, resources: dict[str, int]) -> None:
        self.pending[consumer] = (provider, resources)

    def commit(self, consumer: str) -> None:
        """The claim is in the database: keep it until a snapshot surely shows it."""
        entry = self.pending.pop(consumer, None)
        if entry is not None:
            self.committed[consumer] = (entry[0], entry[1], self.epoch)

    def cancel(self, consumer: str) -> None:
        """The claim failed or was released: the database does not hold it."""
        self.pending.pop(consumer, None)
        self.committed.pop(consumer, None)

    def snapshot(self) -> int:
        """Call just before reading from the database; pass the result to an overlay (or :meth:`abandon`)."""
        self.epoch += 1
        self.reading.add(self.epoch)
        return self.epoch

    def abandon(self, epoch: int) -> None:
        """The read started at ``epoch`` failed: no overlay will follow."""
        self.reading.discard(epoch)

    def _entries(self, epoch: int) -> list[tuple[str, dict[str, int]]]:
        missed = [(p, r) for p, r, at in self.committed.values() if at >= epoch]
        return [*self.pending.values(), *missed]

    def overlay_all(self, hosts: dict[str, HostState], epoch: int) -> None:
        """Lay the reservations over a full snapshot started at ``epoch``; forget those it shows.

        A committed claim is forgotten only when no read still under way might have missed it.
        """
        self.reading.discard(epoch)
        oldest = min([epoch, *self.reading])
        self.committed = {c: e for c, e in self.committed.items() if e[2] >= oldest}
        for provider, resources in self._entries(epoch):
            host = hosts.get(provider)
            if host is not None:
                host.consume(resources)

    def overlay_one(self, host: HostState, epoch: int) -> None:
        """Lay the reservations of one host over its fresh usage read from ``epoch``."""
        self.reading.discard(epoch)
        for provider, resources in self._entries(epoch):
            if provider == host.uuid:
                host.consume(resources)
