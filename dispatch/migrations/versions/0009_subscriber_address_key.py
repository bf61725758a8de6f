"""subscriber.address_key: one subscription per address however it is
capitalised (READER@example.org is reader@example.org), unique with the kind

Existing duplicates — rows whose addresses differ only in case, made before
this key existed — are merged, not refused: on SQLite every command upgrades
the database on first use, so a refusal would lock the operator out of the
very commands that could clean it up. Each merge is logged as a warning
(ids only: an address in a log is personal data). The rule, per group:

- the oldest row (lowest id) stays: it has the longest history, and the
  signed links already sent for it keep working;
- it takes the group's most restrictive status (disabled > bounced >
  unsubscribed > active > pending) with that row's reason: an opt-out or
  a bounce on any spelling of an address is one on the mailbox, and when
  in doubt dispatch sends nothing (a reader who wants it back subscribes
  again in one click; an unwanted email cannot be unsent);
- its preferences are its own; the others' deliveries move to it, except
  those for a window it has already (those were the duplicate copies),
  which are deleted with their attempts, as are the others' rows.

The downgrade drops the key; merged rows are not restored.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
import logging
from collections import defaultdict

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

log = logging.getLogger("dispatch.migrations")

# Most restrictive first.
STATUS_ORDER = ("disabled", "bounced", "unsubscribed", "active", "pending")

subscriber = sa.table(
    'subscriber', sa.column('id', sa.Integer), sa.column('kind', sa.String), sa.column('address', sa.String),
    sa.column('address_key', sa.String), sa.column('status', sa.String), sa.column('status_reason', sa.String),
    sa.column('bounce_count', sa.Integer))
delivery = sa.table('delivery', sa.column('id', sa.Integer), sa.column('subscriber_id', sa.Integer),
                    sa.column('window_key', sa.String))
delivery_attempt = sa.table('delivery_attempt', sa.column('delivery_id', sa.Integer))
subscriber_region = sa.table('subscriber_region', sa.column('subscriber_id', sa.Integer))
subscriber_analyst = sa.table('subscriber_analyst', sa.column('subscriber_id', sa.Integer))


def key_of(kind: str, address: str) -> str:
    # As dispatch.models.address_key, spelled out: a migration must not
    # change when the application code does.
    return address.casefold() if kind == 'email' else address


def upgrade() -> None:
    # ADD COLUMN with a default needs no table rebuild on SQLite (a rebuild
    # under foreign keys would cascade-delete the delivery log).
    op.add_column('subscriber', sa.Column('address_key', sa.String(length=1000), nullable=False,
                                          server_default=''))
    connection = op.get_bind()
    connection.execute(subscriber.update().values(address_key=subscriber.c.address))
    rows = connection.execute(sa.select(subscriber.c.id, subscriber.c.kind, subscriber.c.address,
                                        subscriber.c.status, subscriber.c.status_reason,
                                        subscriber.c.bounce_count).order_by(subscriber.c.id)).all()
    groups: dict[tuple[str, str], list] = defaultdict(list)
    changed = []
    for row in rows:
        key = key_of(row.kind, row.address)
        groups[(row.kind, key)].append(row)
        if key != row.address:
            changed.append({'b_id': row.id, 'b_key': key})
    if changed:
        connection.execute(subscriber.update().where(subscriber.c.id == sa.bindparam('b_id'))
                           .values(address_key=sa.bindparam('b_key')), changed)
    for group in groups.values():
        if len(group) > 1:
            _merge(connection, group)
    op.create_index('uq_subscriber_address_key_kind', 'subscriber', ['address_key', 'kind'], unique=True)


def _merge(connection, group) -> None:
    kept, others = group[0], group[1:]
    strictest = min(group, key=lambda r: STATUS_ORDER.index(r.status) if r.status in STATUS_ORDER else 0)
    values = {'bounce_count': max(r.bounce_count for r in group)}
    if strictest.id != kept.id and STATUS_ORDER.index(strictest.status) < STATUS_ORDER.index(kept.status):
        reason = f"{strictest.status_reason or strictest.status} (on #{strictest.id}, merged into this one)"
        values.update(status=strictest.status, status_reason=reason[:500])
    connection.execute(subscriber.update().where(subscriber.c.id == kept.id).values(**values))
    other_ids = [r.id for r in others]
    kept_windows = set(connection.execute(
        sa.select(delivery.c.window_key).where(delivery.c.subscriber_id == kept.id)).scalars())
    moved, dropped = [], []
    for delivery_id, window_key in connection.execute(
            sa.select(delivery.c.id, delivery.c.window_key)
            .where(delivery.c.subscriber_id.in_(other_ids)).order_by(delivery.c.id)).all():
        if window_key in kept_windows:
            dropped.append(delivery_id)
        else:
            kept_windows.add(window_key)
            moved.append(delivery_id)
    if moved:
        connection.execute(delivery.update().where(delivery.c.id.in_(moved)).values(subscriber_id=kept.id))
    if dropped:
        connection.execute(delivery_attempt.delete().where(delivery_attempt.c.delivery_id.in_(dropped)))
        connection.execute(delivery.delete().where(delivery.c.id.in_(dropped)))
    for link in (subscriber_region, subscriber_analyst):
        connection.execute(link.delete().where(link.c.subscriber_id.in_(other_ids)))
    connection.execute(subscriber.delete().where(subscriber.c.id.in_(other_ids)))
    log.warning("subscribers %s had the address of subscriber %s in another case: merged into %s "
                "(status %s; %d deliveries moved, %d duplicate deliveries removed)",
                ", ".join(f"#{i}" for i in other_ids), f"#{kept.id}", f"#{kept.id}",
                values.get('status', kept.status), len(moved), len(dropped))


def downgrade() -> None:
    op.drop_index('uq_subscriber_address_key_kind', table_name='subscriber')
    # Plain DROP COLUMN (SQLite 3.35+), not a batch rebuild: see upgrade.
    op.drop_column('subscriber', 'address_key')
