"""Schema migrations with Alembic, run in code (no alembic.ini needed).

``novalite db upgrade`` and every ``novalite serve`` start call :func:`upgrade`; it is
idempotent and takes the database to the newest revision.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

from novalite.db.engine import Database

MIGRATIONS = Path(__file__).with_name("migrations")

#: Key of the PostgreSQL advisory lock that serializes controllers' start-up.
STARTUP_LOCK_KEY = 0x4E4F56414C495445  # "NOVALITE"


@contextlib.asynccontextmanager
async def startup_lock(db: Database) -> AsyncIterator[None]:
    """Controllers starting at once on one PostgreSQL database take turns to migrate the
    schema and create the admin user and default flavors (else one dies on a duplicate key).
    SQLite is one process's own file: nothing to serialize."""
    if db.is_sqlite:
        yield
        return
    async with db.engine.connect() as conn:
        await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK_KEY})
            await conn.commit()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(db: Database) -> str | None:
    async with db.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply every pending migration to ``db``."""
    async with db.begin() as conn:
        await conn.run_sync(_run_upgrade, revision)


def _run_upgrade(sync_conn, revision: str) -> None:  # type: ignore[no-untyped-def]
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


async def run_in_conn(conn: AsyncConnection, fn, *args):  # type: ignore[no-untyped-def]
    return await conn.run_sync(fn, *args)
