"""NFS storage domains: the export path on the server, beside the local
mount point the domain's path already holds

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    # existing domains are posixfs or localfs: no export (NULL)
    with op.batch_alter_table('storage_domains') as batch:
        batch.add_column(sa.Column('export_path', sa.String(length=1024), nullable=True))


def downgrade():
    with op.batch_alter_table('storage_domains') as batch:
        batch.drop_column('export_path')
