"""subscriber.opted_out_at and subscriber_change: the reader's opt-out is kept
for good, and every status change leaves a line

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriber') as batch:
        batch.add_column(sa.Column('opted_out_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('subscriber_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_subscriber_change_subscriber_id'), 'subscriber_change', ['subscriber_id'], unique=False)
    # An unsubscribed reader is taken to have opted out (the readers' own links are how one gets there).
    op.execute("UPDATE subscriber SET opted_out_at = CURRENT_TIMESTAMP WHERE status = 'unsubscribed'")


def downgrade() -> None:
    op.drop_index(op.f('ix_subscriber_change_subscriber_id'), table_name='subscriber_change')
    op.drop_table('subscriber_change')
    with op.batch_alter_table('subscriber') as batch:
        batch.drop_column('opted_out_at')
