"""user lockout: failed password attempts, persisted so every API process sees them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:00:00.000000

Like Keystone's ``[security_compliance] lockout_failure_attempts``: the users table
counts consecutive failed password logins (``failed_auth_count``) and remembers the
time of the last one (``failed_auth_at``); the lockout lasts ``lockout_duration``
from that time. Kept in the database, not in memory, because several API processes
share one database and an attacker may spread guesses over all of them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_auth_count", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("failed_auth_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("failed_auth_at")
        batch_op.drop_column("failed_auth_count")
