"""FLASH: an approval sent at once to every matching reader (sitrep.flash)

Revision ID: 0019
Revises: 0016
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sitrep') as batch:
        batch.add_column(sa.Column('flash', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('sitrep') as batch:
        batch.drop_column('flash')
