"""Cluster use over time, for the dashboard's charts: one row per cluster
and sample (at most one a minute, kept a day) written by the engine worker

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-17 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'usage_samples',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('cluster_id', sa.String(36), sa.ForeignKey('clusters.id', ondelete='CASCADE'), nullable=False),
        sa.Column('sampled_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('hosts_up', sa.Integer(), nullable=False),
        sa.Column('host_cpus', sa.Integer(), nullable=False),
        sa.Column('vm_cpus', sa.Integer(), nullable=False),
        sa.Column('memory_total', sa.BigInteger(), nullable=False),
        sa.Column('memory_used', sa.BigInteger(), nullable=False),
        sa.Column('vm_memory', sa.BigInteger(), nullable=False))
    op.create_index('ix_usage_samples_sampled_at', 'usage_samples', ['sampled_at'])


def downgrade():
    op.drop_index('ix_usage_samples_sampled_at', 'usage_samples')
    op.drop_table('usage_samples')
