"""Every data center has oVirt's management network, ovirtmgmt (new data
centers get it when they are created)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 07:00:00
"""
import uuid

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    conn = op.get_bind()
    missing = conn.execute(sa.text(
        "SELECT id FROM datacenters WHERE id NOT IN "
        "(SELECT data_center_id FROM networks WHERE name = 'ovirtmgmt')")).scalars().all()
    for dc_id in missing:
        conn.execute(sa.text(
            "INSERT INTO networks (id, name, description, data_center_id, mtu) "
            "VALUES (:id, 'ovirtmgmt', 'Management Network', :dc, 0)"), {"id": str(uuid.uuid4()), "dc": dc_id})


def downgrade():
    # the networks stay: VM network interfaces may use them by now
    pass
