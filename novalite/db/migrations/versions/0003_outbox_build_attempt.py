"""transactional outbox and build attempt identity

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 18:40:00.000000

``outbox`` holds bus messages written in the same transaction as the state change
that causes them; the relay sends and deletes them after the commit, so a crash
between the commit and the send no longer loses a build or a delete.
``instances.build_attempt`` numbers the placements of a build, so that a message of an
earlier attempt (redelivered, or delayed while its host was down) is recognized as stale.
``instances.locked_by`` says who locked a server (Nova's "owner" or "admin"), so that
a member cannot undo an admin's lock. ``cloud_secrets`` keeps keys every controller process must share (the image ticket key).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "cloud_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("build_attempt", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("locked_by", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("locked_by")
        batch_op.drop_column("build_attempt")
    op.drop_table("cloud_secrets")
    op.drop_table("outbox")
