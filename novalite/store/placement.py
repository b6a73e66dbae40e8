"""Placement: inventories, allocations and atomic claims, in the database.

A resource provider (one per compute node) has inventories per resource class
(``VCPU``, ``MEMORY_MB``, ``DISK_GB``): total, reserved and allocation ratio. An
instance's claim is one allocation row per class. Capacity is
``(total - reserved) * allocation_ratio``.

Why claims cannot overcommit, even with several schedulers in several processes: a
claim reads the provider's ``generation``, checks capacity against the allocations it
sees, and writes its allocations only if ``UPDATE ... SET generation = g + 1 WHERE
generation = g`` changed exactly one row. Any concurrent claim that committed in
between bumped the generation, so this UPDATE matches nothing and the claim retries on
fresh data. On PostgreSQL the UPDATE waits for the competing transaction and then
re-checks the WHERE clause; on SQLite the process's single connection serializes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.db.engine import Database

VCPU = "VCPU"
MEMORY_MB = "MEMORY_MB"
DISK_GB = "DISK_GB"
RESOURCE_CLASSES = (VCPU, MEMORY_MB, DISK_GB)
MAX_GENERATION_RETRIES = 10


class ClaimConflict(Exception):
    """The provider's generation moved under us; the caller retries with fresh data."""


class StaleClaim(Exception):
    """The claim is for a build attempt the instance has left (deleted, placed, or retried
    meanwhile): nothing was claimed, and the caller must not act on the instance."""


@dataclass
class ClaimStats:
    """What claims cost, for the caller to count: transactions run and generation conflicts among them."""

    transactions: int = 0
    conflicts: int = 0


@dataclass
class Inventory:
    total: int
    reserved: int = 0
    allocation_ratio: float = 1.0
    min_unit: int = 1
    max_unit: int = 0
    step_size: int = 1
    #: (total - reserved) * allocation_ratio, computed once: the scheduler reads it for every
    #: host on every decision (an inventory is replaced, never changed, when a host reports).
    capacity: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.capacity = int((self.total - self.reserved) * self.allocation_ratio)


@dataclass
class ProviderUsage:
    uuid: str
    name: str
    generation: int
    inventories: dict[str, Inventory] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)

    def free(self, rc: str) -> int:
        inv = self.inventories.get(rc)
        return inv.capacity - self.used.get(rc, 0) if inv else 0

    def fits(self, resources: dict[str, int]) -> bool:
        inventories, used = self.inventories, self.used
        for rc, amount in resources.items():
            if amount <= 0:
                continue
            inv = inventories.get(rc)
            if inv is None or amount > (inv.max_unit or inv.total) or amount > inv.capacity - used.get(rc, 0):
                return False
        return True


def flavor_resources(flavor: dict[str, Any]) -> dict[str, int]:
    """What an instance of ``flavor`` consumes: vCPUs, RAM, and root+ephemeral+swap disk."""
    swap_gb = (int(flavor.get("swap") or 0) + 1023) // 1024
    return {
        VCPU: int(flavor["vcpus"]),
        MEMORY_MB: int(flavor["memory_mb"]),
        DISK_GB: int(flavor["root_gb"]) + int(flavor.get("ephemeral_gb") or 0) + swap_gb,
    }


async def ensure_provider(conn: Connection, uuid: str, name: str) -> None:
    exists = await conn.scalar(sa.select(t.resource_providers.c.uuid).where(t.resource_providers.c.uuid == uuid))
    if not exists:
        await conn.execute(t.resource_providers.insert().values(uuid=uuid, name=name, generation=0))


async def delete_provider(conn: Connection, uuid: str) -> None:
    """Remove a provider with its allocations and inventories (its compute service was deleted)."""
    await conn.execute(t.allocations.delete().where(t.allocations.c.provider_uuid == uuid))
    await conn.execute(t.inventories.delete().where(t.inventories.c.provider_uuid == uuid))
    await conn.execute(t.resource_providers.delete().where(t.resource_providers.c.uuid == uuid))


async def set_inventories(conn: Connection, provider_uuid: str, inventories: dict[str, Inventory]) -> bool:
    """Replace the provider's inventories if they differ; bumps the generation. Returns True if changed."""
    current = await _inventories(conn, provider_uuid)
    if current == inventories:
        return False
    await conn.execute(t.inventories.delete().where(t.inventories.c.provider_uuid == provider_uuid))
    await conn.execute(
        t.inventories.insert(),
        [
            dict(
                provider_uuid=provider_uuid,
                resource_class=rc,
                total=inv.total,
                reserved=inv.reserved,
                allocation_ratio=inv.allocation_ratio,
                min_unit=inv.min_unit,
                max_unit=inv.max_unit or inv.total,
                step_size=inv.step_size,
            )
            for rc, inv in inventories.items()
        ],
    )
    await conn.execute(
        t.resource_providers.update()
        .where(t.resource_providers.c.uuid == provider_uuid)
        .values(generation=t.resource_providers.c.generation + 1)
    )
    return True


# The claim path's statements, built once: a claim runs them for every placement, and
# building a statement costs more than SQLite takes to execute it (docs/benchmarks.md).
_PROVIDER = sa.select(t.resource_providers).where(t.resource_providers.c.uuid == sa.bindparam("p"))
_INVENTORIES = sa.select(t.inventories).where(t.inventories.c.provider_uuid == sa.bindparam("p"))
_USED = (
    sa.select(t.allocations.c.resource_class, sa.func.sum(t.allocations.c.used))
    .where(t.allocations.c.provider_uuid == sa.bindparam("p"))
    .group_by(t.allocations.c.resource_class)
)
_BUMP_IF = (
    t.resource_providers.update()
    .where(t.resource_providers.c.uuid == sa.bindparam("p"), t.resource_providers.c.generation == sa.bindparam("g"))
    .values(generation=sa.bindparam("g_next"))
)
_INSERT_ALLOCATION = t.allocations.insert()
_CONSUMER_PROVIDERS = (
    sa.select(t.allocations.c.provider_uuid).where(t.allocations.c.consumer_uuid == sa.bindparam("c")).distinct()
)
_DELETE_CONSUMER = t.allocations.delete().where(t.allocations.c.consumer_uuid == sa.bindparam("c"))
_BUMP_ALL = (
    t.resource_providers.update()
    .where(t.resource_providers.c.uuid.in_(sa.bindparam("ps", expanding=True)))
    .values(generation=t.resource_providers.c.generation + 1)
)


async def _inventories(conn: Connection, provider_uuid: str) -> dict[str, Inventory]:
    rows = await conn.execute(_INVENTORIES, {"p": provider_uuid})
    return {
        r.resource_class: Inventory(
            total=r.total,
            reserved=r.reserved,
            allocation_ratio=r.allocation_ratio,
            min_unit=r.min_unit,
            max_unit=r.max_unit,
            step_size=r.step_size,
        )
        for r in rows
    }


async def provider_usage(conn: Connection, provider_uuid: str) -> ProviderUsage | None:
    row = (await conn.execute(_PROVIDER, {"p": provider_uuid})).first()
    if row is None:
        return None
    usage = ProviderUsage(uuid=row.uuid, name=row.name, generation=row.generation)
    usage.inventories = await _inventories(conn, provider_uuid)
    used = await conn.execute(_USED, {"p": provider_uuid})
    usage.used = {rc: int(total or 0) for rc, total in used}
    return usage


async def all_usages(conn: Connection) -> dict[str, ProviderUsage]:
    """Every provider with its inventories and usage, in three queries (the scheduler's view)."""
    usages = {
        r.uuid: ProviderUsage(uuid=r.uuid, name=r.name, generation=r.generation)
        for r in await conn.execute(sa.select(t.resource_providers))
    }
    for r in await conn.execute(sa.select(t.inventories)):
        if r.provider_uuid in usages:
            usages[r.provider_uuid].inventories[r.resource_class] = Inventory(
                total=r.total,
                reserved=r.reserved,
                allocation_ratio=r.allocation_ratio,
                min_unit=r.min_unit,
                max_unit=r.max_unit,
                step_size=r.step_size,
            )
    used = await conn.execute(
        sa.select(
            t.allocations.c.provider_uuid, t.allocations.c.resource_class, sa.func.sum(t.allocations.c.used)
        ).group_by(t.allocations.c.provider_uuid, t.allocations.c.resource_class)
    )
    for provider_uuid, rc, total in used:
        if provider_uuid in usages:
            usages[provider_uuid].used[rc] = int(total or 0)
    return usages


_LOCK_INSTANCE = (
    sa.select(t.instances.c.build_attempt, t.instances.c.host, t.instances.c.deleted)
    .where(t.instances.c.uuid == sa.bindparam("uuid_"))
    .with_for_update()
)


async def _check_attempt(conn: Connection, consumer_uuid: str, build_attempt: int) -> None:
    """Lock the instance's row and make sure it still waits for a host in ``build_attempt``.

    The row lock orders this claim against the conductor's start of a new attempt (which
    updates the row and releases the consumer's claims in one transaction): a claim for
    the old attempt either commits first and is released, or waits and is refused.
    Any claim the consumer still holds is from an earlier decision of this attempt, whose
    answer was lost: it is replaced, never added to (Placement's PUT /allocations).
    """
    row = (await conn.execute(_LOCK_INSTANCE, {"uuid_": consumer_uuid})).first()
    if row is None or row.deleted or row.host is not None or int(row.build_attempt) != int(build_attempt):
        raise StaleClaim(f"instance {consumer_uuid} is no longer waiting for a host in build attempt {build_attempt}")
    await release(conn, consumer_uuid)


async def _claim_once(
    conn: Connection,
    consumer_uuid: str,
    provider_uuid: str,
    resources: dict[str, int],
    build_attempt: int | None = None,
) -> bool:
    if build_attempt is not None:
        await _check_attempt(conn, consumer_uuid, build_attempt)
    usage = await provider_usage(conn, provider_uuid)
    if usage is None or not usage.fits(resources):
        return False
    bumped = await conn.execute(
        _BUMP_IF, {"p": provider_uuid, "g": usage.generation, "g_next": usage.generation + 1}
    )
    if bumped.rowcount != 1:
        raise ClaimConflict(provider_uuid)
    await conn.execute(
        _INSERT_ALLOCATION,
        [
            dict(provider_uuid=provider_uuid, consumer_uuid=consumer_uuid, resource_class=rc, used=amount)
            for rc, amount in resources.items()
            if amount > 0
        ],
    )
    return True


async def claim(
    db: Database,
    consumer_uuid: str,
    provider_uuid: str,
    resources: dict[str, int],
    stats: ClaimStats | None = None,
    *,
    build_attempt: int | None = None,
) -> bool:
    """Atomically allocate ``resources`` on the provider for the consumer.

    Returns False when the provider lacks room. Each attempt is its own short
    transaction; a generation conflict retries on fresh data (counted in ``stats``, so the
    scheduler can tell how much work its races waste). With ``build_attempt`` the
    consumer is an instance: the claim replaces what it holds, and raises
    :class:`StaleClaim` if the instance has left that attempt.
    """
    for _ in range(MAX_GENERATION_RETRIES):
        if stats is not None:
            stats.transactions += 1
        try:
            async with db.begin() as conn:
                return await _claim_once(conn, consumer_uuid, provider_uuid, resources, build_attempt)
        except ClaimConflict:
            if stats is not None:
                stats.conflicts += 1
            continue
    return False


async def release(conn: Connection, consumer_uuid: str) -> None:
    """Free everything the consumer holds (its instance was deleted or failed to build)."""
    providers = [r[0] for r in await conn.execute(_CONSUMER_PROVIDERS, {"c": consumer_uuid})]
    if not providers:
        return
    await conn.execute(_DELETE_CONSUMER, {"c": consumer_uuid})
    await conn.execute(_BUMP_ALL, {"ps": providers})


# -- moving servers (issue 10) --------------------------------------------------------------

_CONSUMER_ROWS = sa.select(t.allocations.c.id, t.allocations.c.provider_uuid).where(
    t.allocations.c.consumer_uuid == sa.bindparam("c")
)


_BUMP_ONE = (
    t.resource_providers.update()
    .where(t.resource_providers.c.uuid == sa.bindparam("p"))
    .values(generation=t.resource_providers.c.generation + 1)
)


async def _bump_in_order(conn: Connection, providers: set[str]) -> None:
    """Bump each provider's generation, one by one in uuid order: two moves between the same
    two hosts in opposite directions then lock them in the same order (no deadlock on PostgreSQL)."""
    for provider in sorted(providers):
        await conn.execute(_BUMP_ONE, {"p": provider})


async def _reown(conn: Connection, ids: list[int], consumer_uuid: str) -> None:
    if ids:
        await conn.execute(
            t.allocations.update().where(t.allocations.c.id.in_(ids)).values(consumer_uuid=consumer_uuid)
        )


async def swap_for_move(conn: Connection, instance_uuid: str, migration_uuid: str) -> bool:
    """Start a move, in the caller's transaction: what the instance holds (the source host,
    old flavor) is re-owned by the migration, and what the migration was given by the
    scheduler's claim (the destination, new flavor) by the instance — Placement's "move
    allocations", both ways at once.

    No provider's usage changes (the destination was claimed, generation-checked, before),
    so a concurrent boot can never take the room a revert needs; the generations are
    bumped all the same, as any allocation write does. False (nothing changed) if the
    migration holds nothing: its claim is gone.
    """
    mine = list(await conn.execute(_CONSUMER_ROWS, {"c": instance_uuid}))
    claimed = list(await conn.execute(_CONSUMER_ROWS, {"c": migration_uuid}))
    if not claimed:
        return False
    await _reown(conn, [r.id for r in mine], migration_uuid)
    await _reown(conn, [r.id for r in claimed], instance_uuid)
    await _bump_in_order(conn, {r.provider_uuid for r in [*mine, *claimed]})
    return True


async def revert_move(conn: Connection, instance_uuid: str, migration_uuid: str) -> None:
    """Undo :func:`swap_for_move`, in the caller's transaction: what the instance holds (the
    destination) is freed and what the migration holds (the source) is the instance's again.
    A revert, or a move that failed before the destination had the guest."""
    mine = list(await conn.execute(_CONSUMER_ROWS, {"c": instance_uuid}))
    held = list(await conn.execute(_CONSUMER_ROWS, {"c": migration_uuid}))
    if not held:
        return  # nothing to give back: keep what the instance holds rather than free it all
    await conn.execute(_DELETE_CONSUMER, {"c": instance_uuid})
    await _reown(conn, [r.id for r in held], instance_uuid)
    await _bump_in_order(conn, {r.provider_uuid for r in [*mine, *held]})


async def consumer_allocations(conn: Connection, consumer_uuid: str) -> dict[str, dict[str, int]]:
    """What one consumer holds: ``{provider_uuid: {resource_class: used}}``."""
    rows = await conn.execute(
        sa.select(t.allocations.c.provider_uuid, t.allocations.c.resource_class, t.allocations.c.used).where(
            t.allocations.c.consumer_uuid == consumer_uuid
        )
    )
    held: dict[str, dict[str, int]] = {}
    for r in rows:
        held.setdefault(r.provider_uuid, {})[r.resource_class] = int(r.used)
    return held
