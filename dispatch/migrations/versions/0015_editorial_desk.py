"""the editorial desk: roles for admin users and API tokens (existing ones
become admin), and the append-only audit log

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

ROLES = ('viewer', 'editor', 'approver', 'admin')


def _role() -> sa.Column:
    return sa.Column('role', sa.Enum(*ROLES, native_enum=False, create_constraint=True, length=16,
                                     name='role_check'), nullable=False, server_default='admin')


def upgrade() -> None:
    for table in ('admin_user', 'api_token'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(_role())
    op.create_table('audit_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_kind', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=100), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_entry_actor', 'audit_entry', ['actor', 'id'], unique=False)
    op.create_index('ix_audit_entry_target', 'audit_entry', ['target', 'id'], unique=False)
    op.create_index('ix_audit_entry_at', 'audit_entry', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_entry_at', table_name='audit_entry')
    op.drop_index('ix_audit_entry_target', table_name='audit_entry')
    op.drop_index('ix_audit_entry_actor', table_name='audit_entry')
    op.drop_table('audit_entry')
    for table in ('api_token', 'admin_user'):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint('role_check', type_='check')  # or SQLite's rebuild keeps a CHECK on a gone column
            batch.drop_column('role')
