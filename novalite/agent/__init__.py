"""The compute agent's side of the database line: it never touches the database.

Everything here runs beside a hypervisor (``novalite agent``, or the local hosts of
``novalite serve``): the agent itself (:mod:`.manager`), the image cache and driver
loading. Whatever it reads or writes goes through the conductor over the bus. An import
contract in CI (``lint-imports``) forbids this package every path to ``novalite.db``,
``novalite.store``, SQLAlchemy, asyncpg, Alembic, the API and the control-plane services.
"""
