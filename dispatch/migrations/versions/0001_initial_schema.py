"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa



revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('analyst',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('title', sa.String(length=100), nullable=True),
    sa.Column('slug', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    op.create_table('region',
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('slug')
    )
    op.create_table('sitrep',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=500), nullable=False),
    sa.Column('event_date', sa.Date(), nullable=False),
    sa.Column('status', sa.Enum('draft', 'approved', 'withdrawn', name='sitrepstatus_check', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('approved_by', sa.String(length=200), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('source_text', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fingerprint')
    )
    with op.batch_alter_table('sitrep', schema=None) as batch_op:
        batch_op.create_index('ix_sitrep_status_approved_at', ['status', 'approved_at'], unique=False)

    op.create_table('stored_setting',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('subscriber',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('email', 'slack', name='subscriberkind_check', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('address', sa.String(length=500), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('send_at', sa.String(length=5), nullable=False),
    sa.Column('cadence', sa.Enum('immediate', 'daily', 'weekly', name='cadence_check', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('weekday', sa.Integer(), nullable=False),
    sa.Column('format', sa.Enum('html', 'text', name='mailformat_check', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('status', sa.Enum('pending', 'active', 'unsubscribed', 'bounced', 'disabled', name='subscriberstatus_check', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('status_reason', sa.String(length=500), nullable=True),
    sa.Column('bounce_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'address', name='uq_subscriber_kind_address')
    )
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.create_index('ix_subscriber_status', ['status'], unique=False)

    op.create_table('commentary',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sitrep_id', sa.Integer(), nullable=False),
    sa.Column('analyst_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['analyst_id'], ['analyst.id'], ),
    sa.ForeignKeyConstraint(['sitrep_id'], ['sitrep.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('commentary', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_commentary_analyst_id'), ['analyst_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_commentary_sitrep_id'), ['sitrep_id'], unique=False)

    op.create_table('delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('window_key', sa.String(length=100), nullable=False),
    sa.Column('sitrep_ids', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'sending', 'sent', 'failed', 'skipped', name='deliverystatus_check', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('receipt', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscriber_id', 'window_key', name='uq_delivery_subscriber_window')
    )
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_status_next_attempt', ['status', 'next_attempt_at'], unique=False)

    op.create_table('sitrep_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sitrep_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['sitrep_id'], ['sitrep.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sitrep_change', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sitrep_change_sitrep_id'), ['sitrep_id'], unique=False)

    op.create_table('sitrep_region',
    sa.Column('sitrep_id', sa.Integer(), nullable=False),
    sa.Column('region_slug', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['region_slug'], ['region.slug'], ),
    sa.ForeignKeyConstraint(['sitrep_id'], ['sitrep.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sitrep_id', 'region_slug')
    )
    op.create_table('subscriber_analyst',
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('analyst_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['analyst_id'], ['analyst.id'], ),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('subscriber_id', 'analyst_id')
    )
    op.create_table('subscriber_region',
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('region_slug', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['region_slug'], ['region.slug'], ),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('subscriber_id', 'region_slug')
    )
    op.create_table('delivery_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_attempt_delivery_id'), ['delivery_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_attempt_delivery_id'))

    op.drop_table('delivery_attempt')
    op.drop_table('subscriber_region')
    op.drop_table('subscriber_analyst')
    op.drop_table('sitrep_region')
    with op.batch_alter_table('sitrep_change', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sitrep_change_sitrep_id'))

    op.drop_table('sitrep_change')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_status_next_attempt')

    op.drop_table('delivery')
    with op.batch_alter_table('commentary', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_commentary_sitrep_id'))
        batch_op.drop_index(batch_op.f('ix_commentary_analyst_id'))

    op.drop_table('commentary')
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.drop_index('ix_subscriber_status')

    op.drop_table('subscriber')
    op.drop_table('stored_setting')
    with op.batch_alter_table('sitrep', schema=None) as batch_op:
        batch_op.drop_index('ix_sitrep_status_approved_at')

    op.drop_table('sitrep')
    op.drop_table('region')
    op.drop_table('analyst')
