"""The data-access layer: the only code that runs SQL.

One module per domain, each a set of typed async functions over SQLAlchemy Core that
take an open connection (``async with db.begin() as conn``), so the caller decides
where a transaction starts and ends. The API, the conductor, the scheduler and the
console proxy read and write the database only through these functions; the compute
agent never imports this package (an import contract in CI says so).

Errors are domain errors (:mod:`novalite.errors`), never HTTP ones: the API maps them.
"""

from novalite.db import Connection

__all__ = ["Connection"]  # the type callers hold while they call the store (the API may not import novalite.db)
