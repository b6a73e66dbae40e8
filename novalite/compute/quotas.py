"""Quotas: per-project limits (defaults from settings, overrides in the ``quotas`` table) and usage."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from novalite.db import schema as t

RESOURCES = ("instances", "cores", "ram", "key_pairs", "metadata_items")


class QuotaExceeded(Exception):
    def __init__(self, resource: str, requested: int, used: int, allowed: int) -> None:
        super().__init__(
            f"Quota exceeded for {resource}: Requested {requested}, but already used {used} of {allowed} {resource}"
        )
        self.resource, self.requested, self.used, self.allowed = resource, requested, used, allowed


async def limits_for(conn: AsyncConnection, settings: Any, project_id: str) -> dict[str, int]:
    limits = {name: int(getattr(settings, f"quota_{name}")) for name in RESOURCES}
    rows = await conn.execute(sa.select(t.quotas).where(t.quotas.c.project_id == project_id))
    for row in rows:
        limits[row.resource] = row.hard_limit
    return limits


async def usage_for(conn: AsyncConnection, project_id: str) -> dict[str, int]:
    row = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(t.instances.c.vcpus), 0),
                sa.func.coalesce(sa.func.sum(t.instances.c.memory_mb), 0),
            ).where(t.instances.c.project_id == project_id, t.instances.c.deleted.is_(False))
        )
    ).first()
    return {"instances": int(row[0]), "cores": int(row[1]), "ram": int(row[2])}


async def check_quota(
    conn: AsyncConnection, settings: Any, project_id: str, instances: int, cores: int, ram: int
) -> None:
    """Raise QuotaExceeded if adding this much would pass a limit (-1 means unlimited)."""
    limits = await limits_for(conn, settings, project_id)
    used = await usage_for(conn, project_id)
    for resource, requested in (("instances", instances), ("cores", cores), ("ram", ram)):
        allowed = limits[resource]
        if allowed >= 0 and used[resource] + requested > allowed:
            raise QuotaExceeded(resource, requested, used[resource], allowed)
