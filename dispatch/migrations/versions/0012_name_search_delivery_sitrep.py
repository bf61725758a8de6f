"""subscriber.name_key (the casefolded name, indexed: a name search is a
range of it) and delivery_sitrep (which SITREPs each delivery carries, as
rows: the log filtered by a SITREP is a range of its key), both filled for
the rows already there; import_job (a CSV upload imported in the background)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BATCH = 5000

subscriber = sa.table('subscriber', sa.column('id', sa.Integer), sa.column('name', sa.String),
                      sa.column('name_key', sa.String))


def key_of(name: str | None) -> str:
    # As dispatch.models.name_key, spelled out: a migration must not change
    # when the application code does.
    return " ".join((name or "").split()).casefold()


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    key_type = sa.String(600, collation='C') if postgres else sa.String(600)
    # ADD COLUMN with a default needs no table rebuild on SQLite (a rebuild
    # under foreign keys would cascade-delete the delivery log).
    op.add_column('subscriber', sa.Column('name_key', key_type, nullable=False, server_default=''))
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(sa.select(subscriber.c.id, subscriber.c.name).where(subscriber.c.id > last)
                                  .order_by(subscriber.c.id).limit(BATCH)).all()
        if not rows:
            break
        last = rows[-1].id
        changed = [{'b_id': r.id, 'b_key': key_of(r.name)} for r in rows if key_of(r.name)]
        if changed:
            connection.execute(subscriber.update().where(subscriber.c.id == sa.bindparam('b_id'))
                               .values(name_key=sa.bindparam('b_key')), changed)
    op.create_index('ix_subscriber_name_key', 'subscriber', ['name_key'], unique=False)

    op.create_table(
        'delivery_sitrep',
        sa.Column('sitrep_id', sa.Integer(), nullable=False),
        sa.Column('delivery_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('sitrep_id', 'delivery_id'),
    )
    # Every delivery's JSON list as rows, in one statement per backend.
    if postgres:
        op.execute("""
            INSERT INTO delivery_sitrep (sitrep_id, delivery_id)
            SELECT DISTINCT CAST(e.value AS INTEGER), d.id
            FROM delivery AS d CROSS JOIN LATERAL json_array_elements_text(d.sitrep_ids) AS e(value)""")
    else:
        op.execute("""
            INSERT OR IGNORE INTO delivery_sitrep (sitrep_id, delivery_id)
            SELECT CAST(e.value AS INTEGER), d.id
            FROM delivery AS d, json_each(d.sitrep_ids) AS e""")
    op.create_index('ix_delivery_sitrep_delivery_id', 'delivery_sitrep', ['delivery_id'], unique=False)

    op.create_table(
        'import_job',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('started_by', sa.String(length=200), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('phase', sa.String(length=16), nullable=False),
        sa.Column('done', sa.Integer(), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('report', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('import_job')
    op.drop_index('ix_delivery_sitrep_delivery_id', table_name='delivery_sitrep')
    op.drop_table('delivery_sitrep')
    op.drop_index('ix_subscriber_name_key', table_name='subscriber')
    # Plain DROP COLUMN (SQLite 3.35+), not a batch rebuild: see upgrade.
    op.drop_column('subscriber', 'name_key')
