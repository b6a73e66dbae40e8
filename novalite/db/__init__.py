"""Database access: one async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg).

Only controller-side services (API, conductor, scheduler, console) import this
package; the compute agent reaches the database through the conductor alone.
"""

from novalite.db.engine import Database, async_url

__all__ = ["Database", "async_url"]
