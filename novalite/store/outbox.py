"""The transactional outbox: bus messages that commit with the change that causes them.

A service that changes state and must tell another service about it (the API accepting
a build, the conductor handing a build to its host) writes the encoded message here in
the same transaction, instead of sending it after the commit: if the process dies
between the two, the message is still sent, by the relay (:mod:`novalite.relay`) of
this or another controller process. The store sees only the topic and the encoded
envelope; it knows nothing of the bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.db.engine import signal_after_commit
from novalite.timeutil import utcnow

#: The commit signal the relay listens to (``Database.on_commit``).
SIGNAL = "outbox"


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    body: str


# Built once: these run for every message, and building a statement (and its cache key)
# costs more than executing it on SQLite.
_INSERT = t.outbox.insert()
_PENDING = (
    sa.select(t.outbox.c.id, t.outbox.c.topic, t.outbox.c.body)
    .order_by(t.outbox.c.id)
    .limit(sa.bindparam("limit"))
)
_PENDING_LOCKED = _PENDING.with_for_update(skip_locked=True)
_DELETE = t.outbox.delete().where(t.outbox.c.id.in_(sa.bindparam("ids", expanding=True)))


async def enqueue(conn: Connection, topic: str, body: str) -> None:
    """Queue ``body`` for ``topic``; it is sent once (and only if) this transaction commits."""
    await conn.execute(_INSERT, {"topic": topic, "body": body, "created_at": utcnow()})
    signal_after_commit(conn, SIGNAL)


async def pending(conn: Connection, limit: int, *, lock: bool = False) -> list[OutboxMessage]:
    """The oldest ``limit`` messages, in the order they were written.

    With ``lock`` (PostgreSQL) the rows are locked ``FOR UPDATE SKIP LOCKED`` until the
    caller's transaction ends, so two relays never send the same message at once.
    """
    query = _PENDING_LOCKED if lock else _PENDING
    return [OutboxMessage(r.id, r.topic, r.body) for r in await conn.execute(query, {"limit": limit})]


async def delete(conn: Connection, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute(_DELETE, {"ids": list(ids)})


async def count(conn: Connection) -> int:
    """Messages not yet sent (for tests and the operator's view)."""
    return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.outbox)) or 0)
