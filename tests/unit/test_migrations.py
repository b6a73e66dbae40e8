"""Migrations build exactly the schema the code declares, on SQLite and on PostgreSQL."""

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
