"""provider webhooks: the requests already acted on (replay guard)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_nonce',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('nonce', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('uq_webhook_nonce_source_nonce', 'webhook_nonce', ['source', 'nonce'], unique=True)
    op.create_index('ix_webhook_nonce_expires_at', 'webhook_nonce', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_webhook_nonce_expires_at', table_name='webhook_nonce')
    op.drop_index('uq_webhook_nonce_source_nonce', table_name='webhook_nonce')
    op.drop_table('webhook_nonce')
