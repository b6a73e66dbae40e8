"""Key pairs: per-user public keys (SSH or x509), looked up by (user, name).

Nova's key pairs belong to a user, not a project; the quota counts a user's pairs.
Errors carry Nova's exact messages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import Conflict, NotFound
from novalite.store.paging import page_after
from novalite.timeutil import utcnow


@dataclass(frozen=True)
class NewKeypair:
    """A key pair to store; the fingerprint is computed by the caller (it validates the key)."""

    user_id: str
    name: str
    public_key: str
    fingerprint: str
    type: str = "ssh"


async def list_keypairs(
    conn: Connection, user_id: str, *, limit: int | None = None, marker: str | None = None
) -> list[sa.Row[Any]]:
    """The user's key pairs in creation order, after the pair named ``marker``; Invalid if unknown."""
    query = sa.select(t.keypairs).where(t.keypairs.c.user_id == user_id).order_by(t.keypairs.c.id)
    rows = list(await conn.execute(query))
    return page_after(rows, lambda r: r.name, marker, limit, f"Marker {marker} could not be found.")


async def get_keypair(conn: Connection, user_id: str, name: str) -> sa.Row[Any]:
    """The user's key pair of this name; NotFound (Nova's words) otherwise."""
    query = sa.select(t.keypairs).where(t.keypairs.c.user_id == user_id, t.keypairs.c.name == name)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"Keypair {name} not found for user {user_id}")
    return row


async def count_keypairs(conn: Connection, user_id: str) -> int:
    """How many key pairs the user has (what the key_pairs quota counts)."""
    return int(await conn.scalar(sa.select(sa.func.count()).where(t.keypairs.c.user_id == user_id)) or 0)


async def create_keypair(conn: Connection, new: NewKeypair) -> None:
    """Store the key pair; Conflict (Nova's words) if the user already has one of that name."""
    taken = await conn.scalar(
        sa.select(sa.func.count()).where(t.keypairs.c.user_id == new.user_id, t.keypairs.c.name == new.name)
    )
    if taken:
        raise Conflict(f"Key pair '{new.name}' already exists.")
    await conn.execute(t.keypairs.insert().values(**asdict(new), created_at=utcnow()))


async def delete_keypair(conn: Connection, keypair_pk: int) -> None:
    """Delete by primary key (the caller found the pair with :func:`get_keypair`)."""
    await conn.execute(t.keypairs.delete().where(t.keypairs.c.id == keypair_pk))
