"""Schema migrations with Alembic, run in code (no alembic.ini needed).

``novalite db upgrade`` and every ``novalite serve`` start call :func:`upgrade`; it is
idempotent and takes the database to the newest revision.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

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


#: Told of each migration as it is applied: its revision and the first line of its docstring.
Progress = Callable[[str, str], None]


async def upgrade(db: Database, revision: str = "head", progress: Progress | None = None) -> list[str]:
    """Apply every pending migration to ``db``; return the revisions applied, in order.

    ``progress`` hears of each one as it is done (``novalite db upgrade`` prints them: a
    migration of a big database can take a while, and silence looks like a hang).
    """
    applied: list[str] = []

    def on_version_apply(*, step: Any, **_: Any) -> None:
        rev = str(step.up_revision_id)
        applied.append(rev)
        if progress is not None:
            doc = (step.up_revision.doc or "").strip().splitlines()
            progress(rev, doc[0] if doc else "")

    async with db.begin() as conn:
        await conn.run_sync(_run_upgrade, revision, on_version_apply)
    return applied


def _run_upgrade(sync_conn, revision: str, on_version_apply) -> None:  # type: ignore[no-untyped-def]
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    cfg.attributes["on_version_apply"] = on_version_apply
    command.upgrade(cfg, revision)


async def run_in_conn(conn: AsyncConnection, fn, *args):  # type: ignore[no-untyped-def]
    return await conn.run_sync(fn, *args)
