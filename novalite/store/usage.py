"""Simple tenant usage: the instances that existed during a period, for instance-hour sums.

Deleted instances are kept (soft-deleted with ``terminated_at``), so a period in the
past still finds what ran then. The arithmetic itself is the API's (Nova's view).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.store.paging import page_after


async def instances_in_period(
    conn: Connection,
    start: datetime,
    stop: datetime,
    *,
    project_id: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> list[sa.Row[Any]]:
    """Instances not terminated before ``start`` nor launched after ``stop``, oldest first.

    ``project_id`` None means every project. Paging is by instance uuid ``marker``;
    an unknown marker is Invalid (Nova's words).
    """
    c = t.instances.c
    query = (
        sa.select(t.instances)
        .where(
            sa.or_(c.terminated_at.is_(None), c.terminated_at > start),
            sa.or_(c.launched_at.is_(None), c.launched_at < stop),
        )
        .order_by(c.created_at, c.id)
    )
    if project_id is not None:
        query = query.where(c.project_id == project_id)
    rows = list(await conn.execute(query))
    return page_after(rows, lambda r: r.uuid, marker, limit, f"Marker {marker} could not be found.")
