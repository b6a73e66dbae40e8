"""server moves and multi-step actions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 01:30:00.000000

``migrations`` records each move of a server (resize, cold/live migration, evacuation);
its uuid is the placement consumer of the source host's resources while the move waits
for confirm or revert. ``instances.system_metadata`` keeps what an action remembers across
its steps (shelve's image, the vm_state to return to); ``instances.old_flavor`` and
``new_flavor`` hold a resize's flavors until it is confirmed or reverted.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("instance_uuid", sa.String(36), nullable=False),
        sa.Column("migration_type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("source_compute", sa.String(255)),
        sa.Column("source_node", sa.String(255)),
        sa.Column("dest_compute", sa.String(255)),
        sa.Column("dest_node", sa.String(255)),
        sa.Column("dest_host", sa.String(255)),
        sa.Column("old_flavor", sa.JSON()),
        sa.Column("new_flavor", sa.JSON()),
        sa.Column("user_id", sa.String(64)),
        sa.Column("project_id", sa.String(64)),
        sa.Column("memory_total", sa.Integer()),
        sa.Column("memory_processed", sa.Integer()),
        sa.Column("memory_remaining", sa.Integer()),
        sa.Column("disk_total", sa.Integer()),
        sa.Column("disk_processed", sa.Integer()),
        sa.Column("disk_remaining", sa.Integer()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime()),
        sa.Column("deleted", sa.Boolean(), server_default="0", nullable=False),
    )
    op.create_index(op.f("ix_migrations_instance_uuid_created_at"), "migrations", ["instance_uuid", "created_at"])
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("system_metadata", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("old_flavor", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("new_flavor", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("new_flavor")
        batch_op.drop_column("old_flavor")
        batch_op.drop_column("system_metadata")
    op.drop_index(op.f("ix_migrations_instance_uuid_created_at"), table_name="migrations")
    op.drop_table("migrations")
