"""A VM's NIC can be unplugged (oVirt's `plugged`): configured, but not in the
VM's domain until it is plugged again; every NIC that existed was plugged

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-20 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('nics') as b:
        b.add_column(sa.Column('plugged', sa.Boolean(), nullable=False, server_default='1'))


def downgrade():
    with op.batch_alter_table('nics') as b:
        b.drop_column('plugged')
