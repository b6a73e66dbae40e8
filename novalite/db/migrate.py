"""Schema migrations with Alembic, run in code (no alembic.ini needed).

``novalite db upgrade`` and every ``novalite serve`` start call :func:`upgrade`; it is
idempotent and takes the database to the newest revision.

Alembic is imported only when there is something to migrate: a start on an up-to-date
database reads the revision with one query and compares it with the newest script's
(found by reading the scripts' ``revision``/``down_revision`` lines), because importing
Alembic costs every controller process about 12 MB of memory for nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from novalite.db.engine import Database

if TYPE_CHECKING:
    from alembic.config import Config

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
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    """The newest revision, as Alembic finds it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


_REVISION = re.compile(r'^(revision|down_revision)\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)


def scripts_head() -> str | None:
    """The newest revision, read from the scripts' text (no Alembic import): the one no other
    script names as its ``down_revision``. None unless there is exactly one (a branch)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        found: dict[str, str] = {m.group(1): m.group(2) for m in _REVISION.finditer(script.read_text())}
        if "revision" in found:
            revisions.add(found["revision"])
        if "down_revision" in found:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def current_revision(db: Database) -> str | None:
    """The database's revision (None: not migrated yet), with one query."""
    async with db.connect() as conn:
        try:
            async with conn.begin_nested():
                value = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        except sa.exc.DBAPIError:  # no alembic_version table: an empty database
            return None
    return str(value) if value is not None else None


#: Told of each migration as it is applied: its revision and the first line of its docstring.
Progress = Callable[[str, str], None]


async def upgrade(db: Database, revision: str = "head", progress: Progress | None = None) -> list[str]:
    """Apply every pending migration to ``db``; return the revisions applied, in order.

    ``progress`` hears of each one as it is done (``novalite db upgrade`` prints them: a
    migration of a big database can take a while, and silence looks like a hang).
    """
    applied: list[str] = []
    if revision == "head" and (head := scripts_head()) is not None and await current_revision(db) == head:
        return applied  # up to date: no Alembic import

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
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    cfg.attributes["on_version_apply"] = on_version_apply
    command.upgrade(cfg, revision)


async def run_in_conn(conn: AsyncConnection, fn, *args):  # type: ignore[no-untyped-def]
    return await conn.run_sync(fn, *args)
