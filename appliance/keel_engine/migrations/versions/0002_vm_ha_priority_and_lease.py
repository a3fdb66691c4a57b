"""VM HA priority and VM lease storage domain

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    # batch mode: SQLite cannot add a foreign key with ALTER TABLE
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('ha_priority', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('lease_storage_domain_id', sa.String(length=36), nullable=True))
        batch.create_foreign_key('fk_vms_lease_storage_domain', 'storage_domains',
                                 ['lease_storage_domain_id'], ['id'])


def downgrade():
    with op.batch_alter_table('vms') as batch:
        batch.drop_constraint('fk_vms_lease_storage_domain', type_='foreignkey')
        batch.drop_column('lease_storage_domain_id')
        batch.drop_column('ha_priority')
