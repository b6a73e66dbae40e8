"""Shelved servers and snapshots under way, for the conductor's periodic tasks (issue 11).

With ``shelved_offload_time`` > 0 a shelved server stays SHELVED on its host that many
seconds, then the conductor offloads it (Nova's ``_poll_shelved_instances``). This reads
the candidates; the offload itself is a conditional UPDATE in the conductor, so one
conductor wins when several run the task.

A shelved server's image (``shelved_image_id`` in its system metadata) goes with it when it
is deleted — by a plain delete, a ``forceDelete``, or the conductor's reclaim of a soft
delete — and when a soft-deleted shelved server is restored (it runs again): see
:func:`shelve_image_to_delete`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from novalite import states
from novalite.db import Connection
from novalite.db import schema as t

#: The system metadata a shelve leaves on the server, gone once it is unshelved or restored.
SHELVE_SYSMETA = ("shelved_image_id", "shelved_at", "shelved_host")


def shelve_image_to_delete(row: Any) -> str | None:
    """The shelve image to delete with ``row`` (an instance being deleted or restored): the one
    its system metadata names if it is SHELVED, SHELVED_OFFLOADED or soft-deleted. A soft
    delete replaces the vm_state (``soft-delete``), so a soft-deleted shelved server is known
    by that key alone; an unshelved server no longer has it (its image is already deleted)."""
    image_id = (row.system_metadata or {}).get("shelved_image_id")
    if not image_id:
        return None
    shelved = row.vm_state in (states.SHELVED, states.SHELVED_OFFLOADED)
    if not shelved and not states.is_soft_deleted(row.deleted, row.deleted_at):
        return None
    return str(image_id)


async def shelved_instances(conn: Connection) -> list[sa.Row[Any]]:
    """Live instances SHELVED on a host with no task under way (offload candidates); not a
    soft-deleted one, even if its row says SHELVED (a shelve's last report came after the
    soft delete): it keeps its host and claim until it is restored or reclaimed."""
    c = t.instances.c
    query = sa.select(t.instances).where(
        c.deleted.is_(False),
        c.deleted_at.is_(None),
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
