"""drop ix_subscriber_status: (status, next_due_at) serves every lookup by status,
and with both, SQLite chose the shorter one for the planner's due query and
read every subscriber on every idle tick

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_subscriber_status', table_name='subscriber')


def downgrade() -> None:
    op.create_index('ix_subscriber_status', 'subscriber', ['status'], unique=False)
