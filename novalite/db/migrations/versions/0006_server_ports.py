"""servers' ports: device tags, order, and which ports the user passed in

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 20:00:00.000000

What Nova keeps about a server's ports besides Neutron's attributes (its virtual
interfaces and network info cache): ``ports.device_tag`` (a create's ``networks`` tag,
2.32+, or an attach's, 2.49+), ``ports.device_index`` (the NIC's place in the request:
eth0 first) and ``ports.preserve_on_delete`` (the user passed the port in: deleting the
server unbinds it instead of deleting it). Existing ports are Nova's (deleted with their
server), in their creation order.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_tag", sa.String(60), nullable=True))
        batch_op.add_column(sa.Column("device_index", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("preserve_on_delete", sa.Boolean(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_column("preserve_on_delete")
        batch_op.drop_column("device_index")
        batch_op.drop_column("device_tag")
