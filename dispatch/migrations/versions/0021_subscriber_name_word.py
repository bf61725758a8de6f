"""subscriber_name_word: each subscriber's name key from every later word
on ("lund" for "Anna Lund"), indexed, so that a name search by a later word
is a range of an index; filled for the subscribers already there

Revision ID: 0021
Revises: 0016
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0019'
branch_labels = None
depends_on = None

BATCH = 5000

subscriber = sa.table('subscriber', sa.column('id', sa.Integer), sa.column('name_key', sa.String))
name_word = sa.table('subscriber_name_word', sa.column('subscriber_id', sa.Integer),
                     sa.column('word_key', sa.String))


def word_keys(key: str) -> list[str]:
    # As dispatch.models.name_word_keys, spelled out (a migration must not
    # change when the application code does), from name_key as 0012 wrote it.
    words = key.split(" ")
    return [" ".join(words[i:]) for i in range(1, len(words))]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    key_type = sa.String(600, collation='C') if postgres else sa.String(600)
    op.create_table(
        'subscriber_name_word',
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('word_key', key_type, nullable=False),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('subscriber_id', 'word_key'),
    )
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(sa.select(subscriber.c.id, subscriber.c.name_key).where(subscriber.c.id > last)
                                  .order_by(subscriber.c.id).limit(BATCH)).all()
        if not rows:
            break
        last = rows[-1].id
        words = [{'subscriber_id': r.id, 'word_key': w} for r in rows for w in word_keys(r.name_key or '')]
        if words:
            connection.execute(name_word.insert(), words)
    # After the rows: one sort instead of an index kept up row by row.
    op.create_index('ix_subscriber_name_word_word_key', 'subscriber_name_word', ['word_key', 'subscriber_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_subscriber_name_word_word_key', table_name='subscriber_name_word')
    op.drop_table('subscriber_name_word')
