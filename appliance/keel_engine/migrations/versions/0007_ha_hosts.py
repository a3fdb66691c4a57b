"""The hosted engine's HA state as data: each host's HA record as its agent
publishes it in the hosts' etcd, and the cluster's facts (global
maintenance, when the engine last read them, why a read failed)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-16 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    # empty until the engine worker's first read of the hosts' etcd
    op.create_table(
        'ha_hosts',
        sa.Column('host_id', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('hostname', sa.String(255), nullable=False),
        sa.Column('address', sa.String(255)),
        sa.Column('ha_state', sa.String(64), nullable=False),
        sa.Column('score', sa.Integer(), nullable=False),
        sa.Column('engine_vm_running', sa.Boolean(), nullable=False),
        sa.Column('engine_health', sa.String(16)),
        sa.Column('engine_detail', sa.Text(), nullable=False),
        sa.Column('local_maintenance', sa.Boolean(), nullable=False),
        sa.Column('agent_stopped', sa.Boolean(), nullable=False),
        sa.Column('record_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('stale', sa.Boolean(), nullable=False))
    op.create_table(
        'ha_cluster',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('global_maintenance', sa.Boolean(), nullable=False),
        sa.Column('updated', sa.DateTime(timezone=True)),
        sa.Column('error', sa.Text()))


def downgrade():
    op.drop_table('ha_cluster')
    op.drop_table('ha_hosts')
