"""Hosts: the services table (heartbeats) and compute nodes."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.timeutil import utcnow

NODE_NAMESPACE = uuidlib.UUID("5b1c8a86-7a4c-4b8e-a2a4-6e6f76616c69")


def node_uuid(hypervisor_hostname: str) -> str:
    """A compute node's uuid, stable across restarts without any state on the host."""
    return str(uuidlib.uuid5(NODE_NAMESPACE, hypervisor_hostname))


async def upsert_service(
    conn: Connection, host: str, binary: str, topic: str | None, availability_zone: str | None
) -> Any:
    """Create the service row if new and mark it seen now; returns the row."""
    now = utcnow()
    row = (
        await conn.execute(sa.select(t.services).where(t.services.c.host == host, t.services.c.binary == binary))
    ).first()
    if row is None:
        await conn.execute(
            t.services.insert().values(
                uuid=str(uuidlib.uuid4()),
                host=host,
                binary=binary,
                topic=topic,
                availability_zone=availability_zone,
                report_count=1,
                last_seen_up=now,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        await conn.execute(
            t.services.update()
            .where(t.services.c.id == row.id)
            .values(
                report_count=t.services.c.report_count + 1,
                last_seen_up=now,
                updated_at=now,
                availability_zone=availability_zone or row.availability_zone,
            )
        )
    return (
        await conn.execute(sa.select(t.services).where(t.services.c.host == host, t.services.c.binary == binary))
    ).first()
