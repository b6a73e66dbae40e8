"""Quotas: per-project limits (defaults from the settings, overrides in ``quotas``) and usage.

Usage is counted from the records themselves, as Nova does since Pike: instances,
cores and RAM from the project's non-deleted instances, key pairs per user. There are
no reservations; :func:`check_quota` is called inside the transaction that creates
the instances.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
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


async def limits_for(conn: Connection, settings: Any, project_id: str) -> dict[str, int]:
    """The project's limit for every resource (-1 is unlimited)."""
    limits = default_limits(settings)
    rows = await conn.execute(
        sa.select(t.quotas.c.resource, t.quotas.c.hard_limit).where(t.quotas.c.project_id == project_id)
    )
    for resource, hard_limit in rows:
        if resource in limits:
            limits[resource] = hard_limit
    return limits


async def usage_for(conn: Connection, project_id: str, user_id: str | None = None) -> dict[str, int]:
    """What the project uses now; ``key_pairs`` counts the user's (0 without a user)."""
    usage = dict.fromkeys(RESOURCES, 0)
    row = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(t.instances.c.vcpus), 0),
                sa.func.coalesce(sa.func.sum(t.instances.c.memory_mb), 0),
            ).where(t.instances.c.project_id == project_id, t.instances.c.deleted == sa.false())
        )
    ).one()
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
    """Raise :class:`QuotaExceeded` unless the project can add these resources."""
    limits = await limits_for(conn, settings, project_id)
    usage = await usage_for(conn, project_id)
    error = quota_overs(limits, usage, {"instances": instances, "cores": cores, "ram": ram})
    if error is not None:
        raise error
