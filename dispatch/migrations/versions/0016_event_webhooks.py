"""event webhooks: endpoints, the events they are sent (an outbox), and
deliveries that go to a webhook instead of a subscriber

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'event_webhook',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('secret', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'event',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    _upgrade_delivery()


def _upgrade_delivery() -> None:
    with op.batch_alter_table('delivery') as batch:
        batch.alter_column('subscriber_id', existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column('webhook_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_delivery_webhook_id_event_webhook', 'event_webhook', ['webhook_id'], ['id'],
                                 ondelete='CASCADE')
        batch.create_index('uq_delivery_webhook_window', ['webhook_id', 'window_key'], unique=True)


def downgrade() -> None:
    op.execute("DELETE FROM delivery_attempt WHERE delivery_id IN (SELECT id FROM delivery WHERE webhook_id IS NOT NULL)")
    op.execute("DELETE FROM delivery WHERE webhook_id IS NOT NULL")
    _downgrade_delivery()
    op.drop_table('event')
    op.drop_table('event_webhook')


def _downgrade_delivery() -> None:
    with op.batch_alter_table('delivery') as batch:
        batch.drop_index('uq_delivery_webhook_window')
        batch.drop_constraint('fk_delivery_webhook_id_event_webhook', type_='foreignkey')
        batch.drop_column('webhook_id')
        batch.alter_column('subscriber_id', existing_type=sa.Integer(), nullable=False)
