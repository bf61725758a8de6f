"""FLASH: an approval sent at once to every matching reader (sitrep.flash),
and the partial index its pending deliveries are claimed first through

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


FLASH_DUE = "status = 'pending' AND window_key LIKE 'flash:%'"


def upgrade() -> None:
    with op.batch_alter_table('sitrep') as batch:
        batch.add_column(sa.Column('flash', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index('ix_delivery_flash_due', 'delivery', ['status', 'next_attempt_at', 'id'], unique=False,
                    sqlite_where=sa.text(FLASH_DUE), postgresql_where=sa.text(FLASH_DUE))


def downgrade() -> None:
    op.drop_index('ix_delivery_flash_due', table_name='delivery')
    with op.batch_alter_table('sitrep') as batch:
        batch.drop_column('flash')
