"""What oVirt's automation sets on a VM and reads back from its guest:
direct kernel boot (os.kernel/initrd/cmdline), the CD-ROM's ISO image, the
cloud-init configuration and the NoCloud seed attached for one boot, and
what the guest agent last reported

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 21:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

VM_COLUMNS = (
    ('kernel_path', sa.Text(), ''), ('initrd_path', sa.Text(), ''), ('kernel_params', sa.Text(), ''),
    ('cdrom_file', sa.String(255), ''), ('seed_volume', sa.String(255), ''),
    ('guest_fqdn', sa.String(255), ''),
)


def upgrade():
    with op.batch_alter_table('vms') as b:
        for name, type_, default in VM_COLUMNS:
            b.add_column(sa.Column(name, type_, nullable=False, server_default=default))
        b.add_column(sa.Column('cdrom_storage_domain_id', sa.String(36),
                               sa.ForeignKey('storage_domains.id', name='fk_vms_cdrom_sd'), nullable=True))
        b.add_column(sa.Column('seed_storage_domain_id', sa.String(36),
                               sa.ForeignKey('storage_domains.id', name='fk_vms_seed_sd'), nullable=True))
        b.add_column(sa.Column('guest_os', sa.JSON(), nullable=True))
        b.add_column(sa.Column('guest_interfaces', sa.JSON(), nullable=True))
        b.add_column(sa.Column('guest_reported_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'vm_initializations',
        sa.Column('vm_id', sa.String(36), sa.ForeignKey('vms.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('host_name', sa.String(255), nullable=False, server_default=''),
        sa.Column('user_name', sa.String(255), nullable=False, server_default=''),
        sa.Column('root_password', sa.Text(), nullable=False, server_default=''),
        sa.Column('authorized_ssh_keys', sa.Text(), nullable=False, server_default=''),
        sa.Column('custom_script', sa.Text(), nullable=False, server_default=''),
        sa.Column('dns_servers', sa.Text(), nullable=False, server_default=''),
        sa.Column('dns_search', sa.Text(), nullable=False, server_default=''),
        sa.Column('timezone', sa.String(64), nullable=False, server_default=''),
        sa.Column('nic_configurations', sa.JSON(), nullable=True))


def downgrade():
    op.drop_table('vm_initializations')
    with op.batch_alter_table('vms') as b:
        for name in ('guest_reported_at', 'guest_interfaces', 'guest_os', 'seed_storage_domain_id',
                     'cdrom_storage_domain_id') + tuple(c[0] for c in reversed(VM_COLUMNS)):
            b.drop_column(name)
