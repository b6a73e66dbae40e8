"""Quotas: per-project limits (defaults from the settings, overrides in ``quotas``) and usage.

Usage is counted from the records themselves, as Nova does since Pike: instances,
cores and RAM from the project's non-deleted instances, key pairs per user. There are
no reservations: the check runs inside the transaction that creates the instances, after
:func:`lock_project_usage`, so that two creates of one project cannot both count the
same usage and together go over the limit (issue 9, defect 10).
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.db.engine import InlineConnection
from novalite.errors import QuotaExceeded
from novalite.store.keypairs import count_keypairs

#: Every quota resource Nova knows, in Nova's order. The network and file-injection
#: ones are fixed (they are only shown by old microversions).
RESOURCES = (
    "instances",
    "cores",
    "ram",
    "floating_ips",
    "fixed_ips",
    "metadata_items",
    "injected_files",
    "injected_file_content_bytes",
    "injected_file_path_bytes",
    "key_pairs",
    "security_groups",
    "security_group_rules",
    "server_groups",
    "server_group_members",
)

#: Resources the API stops showing at 2.36 and at 2.57.
REMOVED_2_36 = ("fixed_ips", "floating_ips", "security_group_rules", "security_groups")
REMOVED_2_57 = (*REMOVED_2_36, "injected_files", "injected_file_content_bytes", "injected_file_path_bytes")

UNLIMITED = -1

#: First key of the PostgreSQL transaction-level advisory locks that serialize the quota
#: check and insert of one project ("NLQT"); the second key is the project's hash. The
#: two-integer key space never meets the one-bigint start-up lock of ``novalite.db.migrate``.
QUOTA_LOCK_CLASS = 0x4E4C5154


def _project_lock_key(project_id: str) -> int:
    """A stable signed 32-bit key for the project (the same in every process, unlike ``hash()``).

    Two projects that share a key only wait for each other's creates: never a wrong answer.
    """
    digest = hashlib.blake2b(project_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_project_usage(conn: Connection, project_id: str) -> None:
    """Hold the project's quota lock until ``conn``'s transaction ends; call it before reading usage.

    Why: usage is counted from the instance rows, so a check-then-insert lets concurrent creates
    (from any number of API processes) all see the same usage and all pass — 18 servers were
    accepted at a quota of 5. Whoever holds this lock has the project's usage to itself until it
    commits its inserts or rolls back; the next create then counts them.

    PostgreSQL: ``pg_advisory_xact_lock`` rather than ``SELECT ... FOR UPDATE`` on the project's
    row, because it needs no row (a project id with no ``projects`` row is still serialized) and
    holds no row lock that another writer of ``projects`` could meet in the other order. It is
    released by COMMIT or ROLLBACK, so no path can leak it. The usage query that follows sees the
    other creates' commits because the transaction is READ COMMITTED (each statement takes a new
    snapshot); under REPEATABLE READ it would not.

    Deadlocks: it is the only lock a create takes before its inserts (everything it runs before is
    a plain read), and no transaction takes it while holding row locks, so the order is always
    "quota lock, then rows".

    SQLite: nothing to do. The engine runs every transaction of the process on one connection
    behind an asyncio lock held from BEGIN to COMMIT (``novalite.db.engine``), so a check and its
    insert are never interleaved with another transaction, and SQLite is one process's database.
    """
    if isinstance(conn, InlineConnection):
        return
    await conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:cls, :key)"),
        {"cls": QUOTA_LOCK_CLASS, "key": _project_lock_key(project_id)},
    )


def default_limits(settings: Any) -> dict[str, int]:
    """The limits of a project without overrides (Nova's defaults, core ones from settings)."""
    return {
        "instances": settings.quota_instances,
        "cores": settings.quota_cores,
        "ram": settings.quota_ram,
        "floating_ips": UNLIMITED,
        "fixed_ips": UNLIMITED,
        "metadata_items": settings.quota_metadata_items,
        "injected_files": 5,
        "injected_file_content_bytes": 10240,
        "injected_file_path_bytes": 255,
        "key_pairs": settings.quota_key_pairs,
        "security_groups": UNLIMITED,
        "security_group_rules": UNLIMITED,
        "server_groups": 10,
        "server_group_members": 10,
    }


# Built once: every create and resize checks quota (see docs/benchmarks.md on why).
_LIMITS = sa.select(t.quotas.c.resource, t.quotas.c.hard_limit).where(
    t.quotas.c.project_id == sa.bindparam("project_id")
)
_USAGE = sa.select(
    sa.func.count(),
    sa.func.coalesce(sa.func.sum(t.instances.c.vcpus), 0),
    sa.func.coalesce(sa.func.sum(t.instances.c.memory_mb), 0),
).where(t.instances.c.project_id == sa.bindparam("project_id"), t.instances.c.deleted == sa.false())


async def limits_for(conn: Connection, settings: Any, project_id: str) -> dict[str, int]:
    """The project's limit for every resource (-1 is unlimited)."""
    limits = default_limits(settings)
    rows = await conn.execute(_LIMITS, {"project_id": project_id})
    for resource, hard_limit in rows:
        if resource in limits:
            limits[resource] = hard_limit
    return limits


async def usage_for(conn: Connection, project_id: str, user_id: str | None = None) -> dict[str, int]:
    """What the project uses now; ``key_pairs`` counts the user's (0 without a user)."""
    usage = dict.fromkeys(RESOURCES, 0)
    row = (await conn.execute(_USAGE, {"project_id": project_id})).one()
    usage["instances"], usage["cores"], usage["ram"] = int(row[0]), int(row[1]), int(row[2])
    if user_id:
        usage["key_pairs"] = await count_keypairs(conn, user_id)
    return usage


async def set_limits(conn: Connection, project_id: str, limits: dict[str, int]) -> None:
    """Override the project's limits for these resources (others keep theirs)."""
    for resource, hard_limit in limits.items():
        changed = await conn.execute(
            t.quotas.update()
            .where(t.quotas.c.project_id == project_id, t.quotas.c.resource == resource)
            .values(hard_limit=hard_limit)
        )
        if not changed.rowcount:
            await conn.execute(
                t.quotas.insert().values(project_id=project_id, resource=resource, hard_limit=hard_limit)
            )


async def reset_limits(conn: Connection, project_id: str) -> None:
    """Drop every override: the project is back to the default limits."""
    await conn.execute(t.quotas.delete().where(t.quotas.c.project_id == project_id))


def quota_overs(limits: dict[str, int], usage: dict[str, int], wanted: dict[str, int]) -> QuotaExceeded | None:
    """The error adding ``wanted`` to ``usage`` would raise under ``limits``; None if it fits.

    Pure, so a caller that already holds limits and usage can test several amounts at no cost.
    """
    overs = [
        name
        for name in sorted(wanted)
        if wanted[name] > 0 and limits[name] != UNLIMITED and usage[name] + wanted[name] > limits[name]
    ]
    if not overs:
        return None
    if len(overs) == 1:
        name = overs[0]
        return QuotaExceeded(name, wanted[name], usage[name], limits[name])
    return QuotaExceeded(overs, [wanted[n] for n in overs], [usage[n] for n in overs], [limits[n] for n in overs])


def instances_that_fit(limits: dict[str, int], usage: dict[str, int], vcpus: int, memory_mb: int) -> int | None:
    """How many more instances of this size the limits allow (Nova's headroom rule); None if unlimited.

    For each of instances, cores and RAM: floor(headroom / what one instance needs), the least
    of them wins; a resource that is unlimited, or that the instance does not use, sets no bound.
    """
    needs = {"instances": 1, "cores": vcpus, "ram": memory_mb}
    fits = [
        max(0, (limits[name] - usage[name]) // need)
        for name, need in needs.items()
        if need > 0 and limits[name] != UNLIMITED
    ]
    return min(fits) if fits else None


async def check_quota(conn: Connection, settings: Any, project_id: str, instances: int, cores: int, ram: int) -> None:
    """Raise :class:`QuotaExceeded` unless the project can add these resources.

    Takes the project's quota lock first: the caller inserts what it checked in the same
    transaction, and no other create of the project counts usage until that commits.
    """
    await lock_project_usage(conn, project_id)
    limits = await limits_for(conn, settings, project_id)
    usage = await usage_for(conn, project_id)
    error = quota_overs(limits, usage, {"instances": instances, "cores": cores, "ram": ram})
    if error is not None:
        raise error
