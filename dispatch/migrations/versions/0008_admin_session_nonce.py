"""admin_user.session_nonce: a session names the account's current nonce, so
signing out, changing the password or removing the account ends every
session of it, and a session never passes to a later account with the same id

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('admin_user') as batch:
        batch.add_column(sa.Column('session_nonce', sa.String(length=64), nullable=True))
    admin_user = sa.table('admin_user', sa.column('id', sa.Integer), sa.column('session_nonce', sa.String))
    connection = op.get_bind()
    # Every existing admin gets a nonce of their own: sessions made before
    # the upgrade carry none, so they end here (everyone signs in again).
    for (admin_id,) in connection.execute(sa.select(admin_user.c.id)).all():
        connection.execute(admin_user.update().where(admin_user.c.id == admin_id)
                           .values(session_nonce=secrets.token_urlsafe(32)))
    with op.batch_alter_table('admin_user') as batch:
        batch.alter_column('session_nonce', existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('admin_user') as batch:
        batch.drop_column('session_nonce')
