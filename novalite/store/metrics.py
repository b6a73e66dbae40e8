"""What ``/metrics`` reads from the database at scrape time that no other store function counts."""

from __future__ import annotations

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t


async def count_instances_by_vm_state(conn: Connection) -> dict[str, int]:
    """Live (not deleted) instances per ``vm_state``, in one grouped query (no rows are loaded)."""
    result = await conn.execute(
        sa.select(t.instances.c.vm_state, sa.func.count())
        .where(t.instances.c.deleted == sa.false())
        .group_by(t.instances.c.vm_state)
    )
    return {str(state): int(count) for state, count in result}
