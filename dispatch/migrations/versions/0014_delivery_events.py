"""delivery_event (bounces, complaints and mailto unsubscribes that come back
after acceptance) and the reader's decaying soft-bounce score

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite: a rebuild under foreign keys empties the log).
    with op.batch_alter_table('subscriber') as batch:
        batch.add_column(sa.Column('soft_bounce_score', sa.Float(), server_default='0', nullable=False))
        batch.add_column(sa.Column('soft_bounce_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('delivery_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=True),
    sa.Column('subscriber_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.String(length=16), nullable=True),
    sa.Column('diagnostic', sa.String(length=500), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('event_key', sa.String(length=200), nullable=True),
    sa.Column('effect', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_delivery_event_source_event', 'delivery_event', ['source', 'event_key'], unique=True)
    op.create_index('ix_delivery_event_received_at', 'delivery_event', ['received_at'], unique=False)
    op.create_index('ix_delivery_event_subscriber_id', 'delivery_event', ['subscriber_id', 'id'], unique=False)
    op.create_index(op.f('ix_delivery_event_delivery_id'), 'delivery_event', ['delivery_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_delivery_event_delivery_id'), table_name='delivery_event')
    op.drop_index('ix_delivery_event_subscriber_id', table_name='delivery_event')
    op.drop_index('ix_delivery_event_received_at', table_name='delivery_event')
    op.drop_index('uq_delivery_event_source_event', table_name='delivery_event')
    op.drop_table('delivery_event')
    with op.batch_alter_table('subscriber') as batch:
        batch.drop_column('soft_bounce_at')
        batch.drop_column('soft_bounce_score')
