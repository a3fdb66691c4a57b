"""Access control (role permits, group permissions, disabled users,
read-only built-in roles), LDAP directories and their groups, VM pools

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 06:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('external_id', sa.String(255)))
        batch.add_column(sa.Column('first_name', sa.String(255), nullable=False, server_default=''))
        batch.add_column(sa.Column('last_name', sa.String(255), nullable=False, server_default=''))
        batch.add_column(sa.Column('email', sa.String(255), nullable=False, server_default=''))
        batch.add_column(sa.Column('disabled', sa.Boolean(), nullable=False, server_default='0'))
    with op.batch_alter_table('roles') as batch:
        batch.add_column(sa.Column('mutable', sa.Boolean(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('allows_viewing_children', sa.Boolean(), nullable=False, server_default='1'))
    op.create_table(
        'role_permits',
        sa.Column('role_id', sa.String(36), sa.ForeignKey('roles.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('permit_id', sa.Integer(), primary_key=True))
    op.create_table(
        'groups',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(255), nullable=False),
        sa.Column('domain', sa.String(255), nullable=False),
        sa.Column('external_id', sa.String(255), nullable=False),
        sa.Column('namespace', sa.String(1024), nullable=False, server_default=''),
        sa.Column('created', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('domain', 'external_id'))
    op.create_table(
        'directory_memberships',
        sa.Column('user_id', sa.String(36), sa.ForeignKey('users.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('domain', sa.String(255), primary_key=True),
        sa.Column('group_external_id', sa.String(255), primary_key=True))
    op.create_table(
        'directories',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(255), nullable=False, unique=True),
        sa.Column('profile', sa.String(32), nullable=False),
        sa.Column('urls', sa.Text(), nullable=False),
        sa.Column('tls', sa.String(16), nullable=False),
        sa.Column('ca_file', sa.String(1024)),
        sa.Column('base_dn', sa.String(1024), nullable=False),
        sa.Column('bind_dn', sa.String(1024)),
        sa.Column('bind_password_encrypted', sa.Text(), nullable=False),
        sa.Column('timeout', sa.Float(), nullable=False),
        sa.Column('login_attribute', sa.String(64)),
        sa.Column('created', sa.DateTime(timezone=True), nullable=False))
    with op.batch_alter_table('permissions') as batch:
        batch.alter_column('user_id', existing_type=sa.String(36), nullable=True)
        batch.add_column(sa.Column('group_id', sa.String(36)))
        batch.create_foreign_key('fk_permissions_group_id', 'groups', ['group_id'], ['id'], ondelete='CASCADE')
        batch.create_index('ix_permissions_user_id', ['user_id'])
        batch.create_index('ix_permissions_group_id', ['group_id'])
        batch.create_index('ix_permissions_object_id', ['object_id'])
    # the objects a permission names use oVirt's element names from now on
    perms = sa.table('permissions', sa.column('object_type'))
    for old, new in (('datacenter', 'data_center'), ('storagedomain', 'storage_domain'), ('vmpool', 'vm_pool')):
        op.get_bind().execute(perms.update().where(perms.c.object_type == old).values(object_type=new))
    op.create_table(
        'vm_pools',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(255), nullable=False, unique=True),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('cluster_id', sa.String(36), sa.ForeignKey('clusters.id'), nullable=False),
        sa.Column('template_id', sa.String(36), sa.ForeignKey('templates.id'), nullable=False),
        sa.Column('type', sa.String(16), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('prestarted_vms', sa.Integer(), nullable=False),
        sa.Column('max_user_vms', sa.Integer(), nullable=False),
        sa.Column('removing', sa.Boolean(), nullable=False),
        sa.Column('created', sa.DateTime(timezone=True), nullable=False))
    op.create_table(
        'vm_pool_members',
        sa.Column('vm_id', sa.String(36), sa.ForeignKey('vms.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('pool_id', sa.String(36), sa.ForeignKey('vm_pools.id', ondelete='CASCADE'), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('user_id', sa.String(36), sa.ForeignKey('users.id', ondelete='SET NULL')),
        sa.Column('permission_id', sa.String(36)),
        sa.Column('base_snapshot_id', sa.String(36)),
        sa.Column('allocated', sa.DateTime(timezone=True)),
        sa.Column('used', sa.Boolean(), nullable=False),
        sa.Column('job_id', sa.String(36)))
    op.create_index('ix_vm_pool_members_pool_id', 'vm_pool_members', ['pool_id'])


def downgrade():
    op.drop_index('ix_vm_pool_members_pool_id', 'vm_pool_members')
    op.drop_table('vm_pool_members')
    op.drop_table('vm_pools')
    op.get_bind().execute(sa.text("DELETE FROM permissions WHERE user_id IS NULL"))
    with op.batch_alter_table('permissions') as batch:
        batch.drop_index('ix_permissions_object_id')
        batch.drop_index('ix_permissions_group_id')
        batch.drop_index('ix_permissions_user_id')
        batch.drop_constraint('fk_permissions_group_id', type_='foreignkey')
        batch.drop_column('group_id')
        batch.alter_column('user_id', existing_type=sa.String(36), nullable=False)
    op.drop_table('directories')
    op.drop_table('directory_memberships')
    op.drop_table('groups')
    op.drop_table('role_permits')
    with op.batch_alter_table('roles') as batch:
        batch.drop_column('allows_viewing_children')
        batch.drop_column('mutable')
    with op.batch_alter_table('users') as batch:
        for c in ('disabled', 'email', 'last_name', 'first_name', 'external_id'):
            batch.drop_column(c)
