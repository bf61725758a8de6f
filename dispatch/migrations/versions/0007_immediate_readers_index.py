"""ix_subscriber_cadence_status: the immediate fan-out reads the immediate
readers in id order through it, instead of every active subscriber

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_subscriber_cadence_status', 'subscriber', ['cadence', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_subscriber_cadence_status', table_name='subscriber')
