"""The database itself: engine (SQLite inline or PostgreSQL over asyncpg), schema, migrations.

Nothing here knows a service: code reads and writes through :mod:`novalite.store`. Only
controller-side processes import this package; the compute agent reaches the database
through the conductor alone (import contracts in CI).
"""

from novalite.db.engine import Connection, Database, async_url

__all__ = ["Connection", "Database", "async_url"]
