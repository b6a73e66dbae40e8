"""The PostgreSQL pool replaces connections the server ended (checked locally, not by a ping
of three round trips per checkout: see ``novalite.db.engine._closed_is_dead``)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
import sqlalchemy as sa

from novalite.db.engine import Database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
async def pg_url() -> object:
    name = f"novalite_pool_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _backends(name: str) -> list[int]:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
        return [r["pid"] for r in rows]
    finally:
        await admin.close()


async def test_a_connection_the_server_ended_is_replaced_before_use(pg_url: str) -> None:
    db = Database(pg_url, pool_size=2)
    try:
        async with db.connect() as conn:
            assert await conn.scalar(sa.text("SELECT 1")) == 1
        name = pg_url.rsplit("/", 1)[1]
        (pid,) = await _backends(name)
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the pooled connection's socket is closed under it
        for _ in range(3):  # every later use works: the dead connection was not lent out
            async with db.begin() as conn:
                assert await conn.scalar(sa.text("SELECT 2")) == 2
        assert pid not in await _backends(name)
    finally:
        await db.close()

