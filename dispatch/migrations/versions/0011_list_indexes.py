"""indexes for the paged admin lists and the dashboard: the delivery log by
status and by day, newest first; address_key compared in code-point order
on PostgreSQL (COLLATE "C"), so that an address prefix search is a range of
its index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_delivery_status_id', 'delivery', ['status', 'id'], unique=False)
    op.create_index('ix_delivery_created_at_status', 'delivery', ['created_at', 'status'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # SQLite compares text by code point already (BINARY). The unique index
        # on (address_key, kind) is rebuilt with the column: equality is unchanged.
        op.alter_column('subscriber', 'address_key', type_=sa.String(1000, collation='C'),
                        existing_type=sa.String(1000), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.alter_column('subscriber', 'address_key', type_=sa.String(1000),
                        existing_type=sa.String(1000, collation='C'), existing_nullable=False)
    op.drop_index('ix_delivery_created_at_status', table_name='delivery')
    op.drop_index('ix_delivery_status_id', table_name='delivery')
