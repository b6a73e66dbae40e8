"""Keys shared by every controller process of a cloud, generated once into the database.

Why the database and not a file in the state dir: two controllers (two API processes,
or the conductor of one and the API of another) must agree on the key, and the
database is the one thing they share. Only controllers read it; the compute agent
never sees the database, so it never sees these keys.
"""

from __future__ import annotations

import secrets as random

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from novalite.db import Connection
from novalite.db import schema as t
from novalite.timeutil import utcnow


async def get_or_create(conn: Connection, name: str, nbytes: int = 32) -> str:
    """The secret called ``name``; made of ``nbytes`` random bytes on first use.

    Two processes creating it at once agree: the loser's insert fails on the primary key
    inside a savepoint and it reads the winner's value.
    """
    query = sa.select(t.cloud_secrets.c.value).where(t.cloud_secrets.c.name == name)
    value = await conn.scalar(query)
    if value is not None:
        return str(value)
    try:
        async with conn.begin_nested():
            await conn.execute(
                t.cloud_secrets.insert().values(name=name, value=random.token_urlsafe(nbytes), created_at=utcnow())
            )
    except IntegrityError:
        pass
    return str(await conn.scalar(query))
