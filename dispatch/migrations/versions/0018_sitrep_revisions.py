"""sitrep revisions: corrections and retractions of released SITREPs

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sitrep_revision',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sitrep_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('kind', sa.Enum('correction', 'retraction', name='revisionkind_check', native_enum=False,
                                  create_constraint=True, length=16), nullable=False),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('regions', sa.JSON(), nullable=True),
        sa.Column('before', sa.JSON(), nullable=True),
        sa.Column('after', sa.JSON(), nullable=True),
        sa.Column('made_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('made_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('approved_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['sitrep_id'], ['sitrep.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sitrep_id', 'number', name='uq_sitrep_revision_number'),
    )


def downgrade() -> None:
    op.drop_table('sitrep_revision')
