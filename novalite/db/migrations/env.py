"""Alembic environment: migrations run on the connection novalite hands over."""

from alembic import context

from novalite.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through novalite.db.migrate (novalite db upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    on_version_apply=context.config.attributes.get("on_version_apply"),
)
with context.begin_transaction():
    context.run_migrations()
