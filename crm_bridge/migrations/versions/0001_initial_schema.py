"""initial schema

Revision ID: 0001_initial
Revises: 
Create Date: 2026-11-22 09:02:23.232390
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001_initial'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ('crm',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('agent_state_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('call_id', sa.String(length=128), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_state_events'))
    )
    with op.batch_alter_table('agent_state_events', schema=None) as batch_op:
        batch_op.create_index('ix_agent_state_events_agent_at', ['agent_id', 'at'], unique=False)

    op.create_table('agents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('login', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('extension', sa.String(length=32), nullable=True),
    sa.Column('sip_uri', sa.String(length=255), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agents')),
    sa.UniqueConstraint('login', name=op.f('uq_agents_login'))
    )
    op.create_table('customers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('first_name', sa.String(length=100), nullable=True),
    sa.Column('last_name', sa.String(length=100), nullable=True),
    sa.Column('segment', sa.Enum('retail', 'business', 'critical', name='segment', native_enum=False, length=16), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=False),
    sa.Column('account_number', sa.String(length=64), nullable=True),
    sa.Column('pin_hash', sa.String(length=255), nullable=True),
    sa.Column('pin_failures', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers')),
    sa.UniqueConstraint('account_number', name=op.f('uq_customers_account_number')),
    sa.UniqueConstraint('external_id', name=op.f('uq_customers_external_id'))
    )
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('ordering_key', sa.String(length=128), nullable=True),
    sa.Column('idempotency_key', sa.String(length=128), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.Column('failed_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_idempotency_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_pending', ['delivered_at', 'failed_at', 'id'], unique=False)

    op.create_table('queue_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.String(length=128), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=True),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_queue_events'))
    )
    with op.batch_alter_table('queue_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_queue_events_call_id'), ['call_id'], unique=False)
        batch_op.create_index('ix_queue_events_queue_at', ['queue', 'at'], unique=False)

    op.create_table('skills',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skills')),
    sa.UniqueConstraint('name', name=op.f('uq_skills_name'))
    )
    op.create_table('accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('iban_masked', sa.String(length=64), nullable=False),
    sa.Column('balance_bucket', sa.String(length=32), nullable=True),
    sa.Column('products', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_accounts_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accounts_customer_id'), ['customer_id'], unique=False)

    op.create_table('agent_skills',
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('skill_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_skills_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['skill_id'], ['skills.id'], name=op.f('fk_agent_skills_skill_id_skills'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'skill_id', name=op.f('pk_agent_skills'))
    )
    op.create_table('phone_numbers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('e164', sa.String(length=20), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=50), nullable=True),
    sa.Column('verified', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_phone_numbers_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phone_numbers')),
    sa.UniqueConstraint('e164', name=op.f('uq_phone_numbers_e164'))
    )
    with op.batch_alter_table('phone_numbers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_phone_numbers_customer_id'), ['customer_id'], unique=False)

    op.create_table('tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=True),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('call_id', sa.String(length=128), nullable=True),
    sa.Column('service', sa.String(length=64), nullable=True),
    sa.Column('line', sa.String(length=64), nullable=True),
    sa.Column('dnis', sa.String(length=32), nullable=True),
    sa.Column('status', sa.Enum('open', 'pending', 'closed', name='ticketstatus', native_enum=False, length=16), nullable=False),
    sa.Column('disposition', sa.String(length=64), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('linked_ticket_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_tickets_customer_id_customers'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['linked_ticket_id'], ['tickets.id'], name=op.f('fk_tickets_linked_ticket_id_tickets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets')),
    sa.UniqueConstraint('external_id', name=op.f('uq_tickets_external_id'))
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tickets_call_id'), ['call_id'], unique=False)
        batch_op.create_index('ix_tickets_customer_status_service', ['customer_id', 'status', 'service'], unique=False)

    op.create_table('call_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.String(length=128), nullable=False),
    sa.Column('ani', sa.String(length=64), nullable=True),
    sa.Column('dnis', sa.String(length=64), nullable=True),
    sa.Column('line', sa.String(length=64), nullable=True),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('identified_by', sa.Enum('ani', 'pai', 'pin', 'none', name='identifiedby', native_enum=False, length=16), nullable=False),
    sa.Column('verification_decision', sa.String(length=32), nullable=True),
    sa.Column('verification_score', sa.Float(), nullable=True),
    sa.Column('verification_threshold', sa.Float(), nullable=True),
    sa.Column('verification_model', sa.String(length=64), nullable=True),
    sa.Column('verification_flags', sa.JSON(), nullable=False),
    sa.Column('service', sa.String(length=64), nullable=True),
    sa.Column('queue', sa.String(length=64), nullable=True),
    sa.Column('ivr_path', sa.JSON(), nullable=False),
    sa.Column('ivr_seconds', sa.Float(), nullable=True),
    sa.Column('ivr_exit', sa.Enum('queued', 'transferred', 'completed', 'hung_up', 'error', name='ivrexit', native_enum=False, length=16), nullable=True),
    sa.Column('arrived_at', sa.DateTime(), nullable=False),
    sa.Column('queued_at', sa.DateTime(), nullable=True),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('agent_id', sa.String(length=64), nullable=True),
    sa.Column('wait_seconds', sa.Float(), nullable=True),
    sa.Column('talk_seconds', sa.Float(), nullable=True),
    sa.Column('wrapup_seconds', sa.Float(), nullable=True),
    sa.Column('end_reason', sa.String(length=64), nullable=True),
    sa.Column('transfers', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('active', 'ended', name='callstatus', native_enum=False, length=16), nullable=False),
    sa.Column('disposition', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_call_records_customer_id_customers'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_call_records_ticket_id_tickets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_call_records')),
    sa.UniqueConstraint('call_id', name=op.f('uq_call_records_call_id'))
    )
    with op.batch_alter_table('call_records', schema=None) as batch_op:
        batch_op.create_index('ix_call_records_arrived_at', ['arrived_at'], unique=False)
        batch_op.create_index('ix_call_records_customer_service', ['customer_id', 'service'], unique=False)
        batch_op.create_index('ix_call_records_status', ['status'], unique=False)

    op.create_table('interactions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('call_id', sa.String(length=128), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_interactions_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_interactions_ticket_id_tickets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_interactions'))
    )
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.create_index('ix_interactions_customer_at', ['customer_id', 'at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index('ix_interactions_customer_at')

    op.drop_table('interactions')
    with op.batch_alter_table('call_records', schema=None) as batch_op:
        batch_op.drop_index('ix_call_records_status')
        batch_op.drop_index('ix_call_records_customer_service')
        batch_op.drop_index('ix_call_records_arrived_at')

    op.drop_table('call_records')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_customer_status_service')
        batch_op.drop_index(batch_op.f('ix_tickets_call_id'))

    op.drop_table('tickets')
    with op.batch_alter_table('phone_numbers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_phone_numbers_customer_id'))

    op.drop_table('phone_numbers')
    op.drop_table('agent_skills')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accounts_customer_id'))

    op.drop_table('accounts')
    op.drop_table('skills')
    with op.batch_alter_table('queue_events', schema=None) as batch_op:
        batch_op.drop_index('ix_queue_events_queue_at')
        batch_op.drop_index(batch_op.f('ix_queue_events_call_id'))

    op.drop_table('queue_events')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending')

    op.drop_table('outbox')
    op.drop_table('customers')
    op.drop_table('agents')
    with op.batch_alter_table('agent_state_events', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_state_events_agent_at')

    op.drop_table('agent_state_events')
