"""Jobs the engine worker runs (kind, params, result, fault, claim; steps),
HA state as data (fence records, a host's fence and maintenance intent, a
VM's pending HA restart), sign-in throttling, the worker lease

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""
import re
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'fences',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('host_id', sa.String(36), sa.ForeignKey('hosts.id', ondelete='CASCADE'), nullable=False),
        sa.Column('method', sa.String(16), nullable=False),
        sa.Column('action', sa.String(16), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('agent', sa.String(255)),
        sa.Column('requested_by', sa.String(255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('outcome', sa.Text(), nullable=False),
        sa.Column('started', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended', sa.DateTime(timezone=True)))
    op.create_index('ix_fences_host_id', 'fences', ['host_id'])
    with op.batch_alter_table('hosts') as batch:
        batch.add_column(sa.Column('maintenance_requested', sa.Boolean(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('fence_id', sa.String(36)))
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('ha_restart_host_id', sa.String(36)))
        batch.create_foreign_key('fk_vms_ha_restart_host', 'hosts', ['ha_restart_host_id'], ['id'],
                                 ondelete='SET NULL')
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('kind', sa.String(64)))
        batch.add_column(sa.Column('params', sa.JSON()))
        batch.add_column(sa.Column('result', sa.JSON()))
        batch.add_column(sa.Column('fault_status', sa.Integer()))
        batch.add_column(sa.Column('fault_reason', sa.Text()))
        batch.add_column(sa.Column('fault_detail', sa.Text()))
        batch.add_column(sa.Column('claimed_by', sa.String(64)))
        batch.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True)))
        batch.create_index('ix_jobs_queue', ['status', 'claimed_by'])
    op.create_table(
        'steps',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('job_id', sa.String(36), sa.ForeignKey('jobs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('type', sa.String(16), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('start_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('end_time', sa.DateTime(timezone=True)))
    op.create_index('ix_steps_job_id', 'steps', ['job_id'])
    op.create_table(
        'login_failures',
        sa.Column('key', sa.String(320), primary_key=True),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('last_failure', sa.DateTime(timezone=True), nullable=False),
        sa.Column('blocked_until', sa.DateTime(timezone=True)))
    op.create_table(
        'worker_lease',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('owner', sa.String(64), nullable=False),
        sa.Column('renewed', sa.DateTime(timezone=True), nullable=False))
    _carry_over_text_state()


def _carry_over_text_state():
    """Until now a confirmed fence was the prefix 'fenced: ' of a host's status
    detail and a pending HA restart a '[ha-pending:HOST]' marker in a VM's stop
    reason; turn the ones in flight into rows, once, here."""
    conn = op.get_bind()
    now = datetime.now(timezone.utc)
    hosts = sa.table('hosts', sa.column('id'), sa.column('status'), sa.column('status_detail'),
                     sa.column('fence_id'))
    fences = sa.table('fences', *(sa.column(c) for c in (
        'id', 'host_id', 'method', 'action', 'state', 'agent', 'requested_by', 'reason', 'outcome',
        'started', 'ended')))
    for host_id, detail in conn.execute(sa.select(hosts.c.id, hosts.c.status_detail)
                                        .where(hosts.c.status == 'down')).all():
        if not (detail or '').startswith('fenced: '):
            continue
        fence_id = str(uuid.uuid4())
        manual = 'manually' in detail
        conn.execute(fences.insert().values(
            id=fence_id, host_id=host_id, method='manual' if manual else 'bmc',
            action='manual' if manual else 'off', state='confirmed', agent=None, requested_by='',
            reason='', outcome=detail, started=now, ended=now))
        conn.execute(hosts.update().where(hosts.c.id == host_id).values(fence_id=fence_id))
    vms = sa.table('vms', sa.column('id'), sa.column('stop_reason'), sa.column('ha_restart_host_id'))
    for vm_id, reason in conn.execute(sa.select(vms.c.id, vms.c.stop_reason)).all():
        m = re.search(r'\[ha-pending:([0-9a-f-]{36})\]', reason or '')
        if m:
            conn.execute(vms.update().where(vms.c.id == vm_id).values(
                ha_restart_host_id=m.group(1), stop_reason=reason.replace(m.group(0), '').rstrip()))


def downgrade():
    op.drop_table('worker_lease')
    op.drop_table('login_failures')
    op.drop_index('ix_steps_job_id', 'steps')
    op.drop_table('steps')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_queue')
        for c in ('claimed_at', 'claimed_by', 'fault_detail', 'fault_reason', 'fault_status', 'result',
                  'params', 'kind'):
            batch.drop_column(c)
    with op.batch_alter_table('vms') as batch:
        batch.drop_constraint('fk_vms_ha_restart_host', type_='foreignkey')
        batch.drop_column('ha_restart_host_id')
    with op.batch_alter_table('hosts') as batch:
        batch.drop_column('fence_id')
        batch.drop_column('maintenance_requested')
    op.drop_index('ix_fences_host_id', 'fences')
    op.drop_table('fences')
