"""Migrations build exactly the schema the code declares, on SQLite and on PostgreSQL."""

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from novalite.db import Database
from novalite.db.migrate import current_revision, head_revision, upgrade
from novalite.db.schema import metadata


async def test_upgrade_is_idempotent_and_matches_schema(db_url):
    db = Database(db_url)
    try:
        await upgrade(db)
        await upgrade(db)  # a second start changes nothing
        assert await current_revision(db) == head_revision()
        async with db.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
        assert diff == [], f"migrations and novalite/db/schema.py disagree: {diff}"
    finally:
        await db.close()


async def test_upgrade_tells_what_it_applies(tmp_path):
    """A first start applies every migration and says so; the next applies none."""
    db = Database(f"sqlite:///{tmp_path / 'n.db'}")
    heard: list[tuple[str, str]] = []
    try:
        applied = await upgrade(db, progress=lambda rev, doc: heard.append((rev, doc)))
        assert applied == ["0001", "0002", "0003", "0004", "0005", "0006"]
        assert [rev for rev, _ in heard] == applied
        assert all(doc for _, doc in heard)  # each says what it does
        assert "outbox" in heard[2][1]
        assert await upgrade(db, progress=lambda rev, doc: heard.append((rev, doc))) == []
    finally:
        await db.close()


def test_db_upgrade_command_prints_progress(tmp_path):
    env = {
        "NOVALITE_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "NOVALITE_STATE_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "novalite.cli", "db", "upgrade"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "database at revision (empty)" in out
    assert "applied 0003: transactional outbox and build attempt identity" in out
    assert "applied 0004: server moves and multi-step actions" in out
    assert "applied 0005: networks, subnets, port addresses and security groups" in out
    assert "6 migration(s) applied" in out


def test_the_scripts_head_is_alembics_head():
    """The start-up check reads the newest revision from the scripts' text; it must be Alembic's."""
    from novalite.db.migrate import scripts_head

    assert scripts_head() == head_revision() is not None


def test_a_start_on_an_up_to_date_database_does_not_import_alembic(tmp_path):
    """Importing Alembic costs a controller ~12 MB: only a start that migrates pays it."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'n.db'}"
    script = (
        "import asyncio, sys\n"
        "from novalite.db import Database\n"
        "from novalite.db.migrate import upgrade\n"
        "async def main():\n"
        f"    db = Database({url!r})\n"
        "    applied = await upgrade(db)\n"
        "    await db.close()\n"
        "    print(len(applied), 'alembic' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert first[1] == "True" and int(first[0]) >= 5  # the first start migrates, with Alembic
    assert again == ["0", "False"]  # the next one finds nothing to do, without it
