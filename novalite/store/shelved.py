"""Shelved servers and snapshots under way, for the conductor's periodic tasks (issue 11).

With ``shelved_offload_time`` > 0 a shelved server stays SHELVED on its host that many
seconds, then the conductor offloads it (Nova's ``_poll_shelved_instances``). This reads
the candidates; the offload itself is a conditional UPDATE in the conductor, so one
conductor wins when several run the task.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from novalite import states
from novalite.db import Connection
from novalite.db import schema as t


async def shelved_instances(conn: Connection) -> list[sa.Row[Any]]:
    """Live instances SHELVED on a host with no task under way (offload candidates)."""
    c = t.instances.c
    query = sa.select(t.instances).where(
        c.deleted.is_(False),
        c.vm_state == states.SHELVED,
        c.task_state.is_(None),
        c.host.is_not(None),
    )
    return list((await conn.execute(query)).fetchall())


async def image_task_instances(conn: Connection, task_states: Collection[str]) -> list[sa.Row[Any]]:
    """Live instances on a host in one of ``task_states`` (snapshots under way), for the
    conductor's check of hosts that went down in the middle."""
    c = t.instances.c
    query = sa.select(t.instances).where(
        c.deleted.is_(False), c.task_state.in_(sorted(task_states)), c.host.is_not(None)
    )
    return list((await conn.execute(query)).fetchall())
