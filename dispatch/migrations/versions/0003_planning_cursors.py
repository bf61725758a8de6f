"""planning cursors: subscriber.next_due_at, sitrep.immediate_planned_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_subscriber_status_next_due', ['status', 'next_due_at'], unique=False)
    with op.batch_alter_table('sitrep', schema=None) as batch_op:
        batch_op.add_column(sa.Column('immediate_planned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_sitrep_status_immediate', ['status', 'immediate_planned_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sitrep', schema=None) as batch_op:
        batch_op.drop_index('ix_sitrep_status_immediate')
        batch_op.drop_column('immediate_planned_at')
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.drop_index('ix_subscriber_status_next_due')
        batch_op.drop_column('next_due_at')
