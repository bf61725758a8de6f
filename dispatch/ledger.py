"""The delivery ledger: the only code that writes Delivery and
DeliveryAttempt rows, and so the only place that sets a delivery's status.

    pending ──claim──▶ sending ──mark_sent──▶ sent
       ▲                  │ ──mark_retry──▶ pending (later) | failed (exhausted)
       │                  │ ──mark_failed─▶ failed
       │                  │ ──mark_skipped▶ skipped
       └──reclaim_expired─┘ (lease ran out: the worker died)

Planning inserts one row per (subscriber, window) and relies on the unique
key, so planning twice inserts nothing. Claiming takes due pending rows with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers share the
work; on SQLite every transaction is BEGIN IMMEDIATE, which serialises claims.
Each claim increments ``attempts``; finishing a delivery checks that number, so
a worker whose lease expired cannot overwrite the work of the one that
reclaimed it. Every finish appends a DeliveryAttempt row: the log.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from dispatch.digest import Window
from dispatch.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscriber
from dispatch.retry import RetryPolicy

DEFAULT_LEASE = timedelta(minutes=5)
# Window keys of notices (confirmation, reminder): deliveries to one reader
# that carry no SITREP and are sent by the notice sender, not the digest sender.
NOTICE_PREFIX = "notice:"
_table = Delivery.__table__


@dataclass(frozen=True)
class Claimed:
    id: int
    subscriber_id: int
    window_key: str
    sitrep_ids: tuple[int, ...]
    attempts: int  # this claim's number: finishing checks it
    receipt: str | None  # progress of an earlier, partly sent attempt


def plan(session: Session, subscriber_id: int, windows: Iterable[Window], *, now: datetime) -> int:
    """Insert a pending delivery per window; existing (subscriber, window)
    rows are left alone. Returns how many rows are new."""
    return plan_many(session, [(subscriber_id, w) for w in windows], now=now)


def plan_many(session: Session, planned: Sequence[tuple[int, Window]], *, now: datetime) -> int:
    """``plan`` for many subscribers in one statement."""
    if not planned:
        return 0
    rows = [(subscriber_id, w.key, w.sitrep_ids) for subscriber_id, w in planned]
    statement = _plan_statement(session.get_bind().dialect.name)
    return session.connection().execute(statement, {"rows": rows, "now": now}).rowcount


@lru_cache(maxsize=4)
def _plan_statement(dialect: str):
    """INSERT … SELECT from one JSON array of [subscriber id, window key,
    SITREP ids] rows, skipping (subscriber, window) pairs already planned.

    One parameter, serialised in one go, instead of an executemany whose
    per-row parameter handling cost three times the database's own work at
    100,000 rows; and a single statement's row count (kept for an INSERT
    with ``preserve_rowcount``) is exact on both backends, where psycopg
    reports none for an executemany.
    """
    unpack = sa.func.json_array_elements if dialect == "postgresql" else sa.func.json_each
    elements = unpack(sa.bindparam("rows", type_=sa.JSON)).table_valued(sa.column("value", sa.JSON))
    row = elements.c.value
    now = sa.bindparam("now", type_=_table.c.created_at.type)
    rows = sa.select(row[0].as_integer(), row[1].as_string(), row[2], sa.literal(DeliveryStatus.pending.value),
                     sa.literal(0), now, now).where(sa.true())  # SQLite needs a WHERE before ON CONFLICT
    columns = ["subscriber_id", "window_key", "sitrep_ids", "status", "attempts", "next_attempt_at", "created_at"]
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_table).from_select(columns, rows).on_conflict_do_nothing(
        index_elements=["subscriber_id", "window_key"]).execution_options(preserve_rowcount=True)


def plan_notice(session: Session, subscriber_id: int, *, kind: str, now: datetime) -> int:
    """A notice (``kind``: confirm, remind) for one reader, due now; its own
    window key, so every request is a delivery of its own. Returns its id."""
    row = Delivery(subscriber_id=subscriber_id, window_key=f"{NOTICE_PREFIX}{kind}:{now.isoformat()}",
                   sitrep_ids=[], status=DeliveryStatus.pending, next_attempt_at=now, created_at=now)
    session.add(row)
    session.flush()
    return row.id


def notice_kind(window_key: str) -> str:
    """``notice:confirm:…`` -> ``confirm``."""
    return window_key[len(NOTICE_PREFIX):].split(":", 1)[0]


def notices_since(session: Session, subscriber_id: int, *, since: datetime) -> int:
    """How many notices were planned for this reader since then: the daily cap counts them."""
    return session.execute(select(sa.func.count()).select_from(_table).where(
        _table.c.subscriber_id == subscriber_id, _table.c.window_key.startswith(NOTICE_PREFIX),
        _table.c.created_at >= since)).scalar_one()


def claim(session: Session, *, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE,
          worker_id: int | None = None, notices: bool = False) -> list[Claimed]:
    """Due digests, or (``notices``) due notices: each has senders of its own."""
    kind = col(Delivery.window_key).startswith(NOTICE_PREFIX)
    due = (
        select(Delivery.id)
        .where(Delivery.status == DeliveryStatus.pending, col(Delivery.next_attempt_at) <= now,
               kind if notices else sa.not_(kind))
        .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        sa.update(_table)
        .where(_table.c.id.in_(due.scalar_subquery()))
        .values(status=DeliveryStatus.sending.value, lease_until=now + lease, attempts=_table.c.attempts + 1,
                claimed_by=worker_id)
        .returning(_table.c.id, _table.c.subscriber_id, _table.c.window_key, _table.c.sitrep_ids,
                   _table.c.attempts, _table.c.receipt)
    )
    rows = session.execute(statement).all()
    claimed = [Claimed(id=r.id, subscriber_id=r.subscriber_id, window_key=r.window_key,
                       sitrep_ids=tuple(r.sitrep_ids), attempts=r.attempts, receipt=r.receipt) for r in rows]
    return sorted(claimed, key=lambda c: c.id)


@dataclass(frozen=True)
class Finish:
    """How one claimed delivery ends this attempt: its new state and the
    log line. Built without I/O; ``record`` writes many in one go."""

    claimed: Claimed
    at: datetime
    status: DeliveryStatus
    outcome: str  # the DeliveryAttempt outcome
    detail: str
    receipt: str | None
    last_error: str | None
    next_attempt_at: datetime
    sent_at: datetime | None = None
    attempts: int | None = None  # None: keep the claim's count


def sent(claimed: Claimed, *, receipt: str, now: datetime) -> Finish:
    return Finish(claimed, now, DeliveryStatus.sent, "sent", receipt, receipt=receipt, last_error=None,
                  next_attempt_at=now, sent_at=now)


def retry(claimed: Claimed, *, error: str, now: datetime, policy: RetryPolicy, retry_after: float | None = None,
          progress: str | None = None, rng: random.Random | None = None) -> Finish:
    """Back to pending after a backoff, or failed when attempts are used up."""
    receipt = progress if progress is not None else claimed.receipt
    if policy.exhausted(claimed.attempts):
        return Finish(claimed, now, DeliveryStatus.failed, "failed", f"gave up after {claimed.attempts} attempts: {error}",
                      receipt=receipt, last_error=error, next_attempt_at=now)
    at = now + policy.delay(claimed.attempts, retry_after=retry_after, rng=rng)
    return Finish(claimed, now, DeliveryStatus.pending, "retry", f"{error}; next attempt {at.isoformat()}",
                  receipt=receipt, last_error=error, next_attempt_at=at)


def failed(claimed: Claimed, *, error: str, now: datetime, progress: str | None = None) -> Finish:
    return Finish(claimed, now, DeliveryStatus.failed, "failed", error, last_error=error, next_attempt_at=now,
                  receipt=progress if progress is not None else claimed.receipt)


def skipped(claimed: Claimed, *, reason: str, now: datetime) -> Finish:
    return Finish(claimed, now, DeliveryStatus.skipped, "skipped", reason, receipt=claimed.receipt, last_error=reason,
                  next_attempt_at=now)


def released(claimed: Claimed, *, now: datetime) -> Finish:
    """Handed back untouched (clean shutdown): the attempt does not count."""
    return Finish(claimed, now, DeliveryStatus.pending, "released", "released at shutdown before sending",
                  receipt=claimed.receipt, last_error=None, next_attempt_at=now, attempts=claimed.attempts - 1)


# One statement for every kind of finish, compiled once and run as executemany.
# The claim's attempt number guards it: a worker whose lease expired and was
# taken over changes nothing.
_FINISH = (
    sa.update(_table)
    .where(_table.c.id == sa.bindparam("b_id"), _table.c.status == DeliveryStatus.sending.value,
           _table.c.attempts == sa.bindparam("b_claim"))
    .values(status=sa.bindparam("b_status"), lease_until=None, receipt=sa.bindparam("b_receipt"),
            last_error=sa.bindparam("b_error"), next_attempt_at=sa.bindparam("b_next"),
            sent_at=sa.bindparam("b_sent_at"), attempts=sa.bindparam("b_attempts"))
)


def record(session: Session, finishes: Sequence[Finish]) -> int:
    """Write the finishes and their log rows; returns how many rows this
    worker still owned (the others' claims had been taken over)."""
    if not finishes:
        return 0
    owned = session.execute(_FINISH, [
        {"b_id": f.claimed.id, "b_claim": f.claimed.attempts, "b_status": f.status.value, "b_receipt": f.receipt,
         "b_error": f.last_error, "b_next": f.next_attempt_at, "b_sent_at": f.sent_at,
         "b_attempts": f.claimed.attempts if f.attempts is None else f.attempts} for f in finishes
    ]).rowcount
    stale = "" if owned == len(finishes) else " (a claim in this run had expired and was taken over)"
    session.execute(sa.insert(DeliveryAttempt.__table__), [
        {"delivery_id": f.claimed.id, "at": f.at, "outcome": f.outcome, "detail": f.detail + stale}
        for f in finishes
    ])
    return owned


def mark_sent(session: Session, claimed: Claimed, *, receipt: str, now: datetime) -> bool:
    return record(session, [sent(claimed, receipt=receipt, now=now)]) == 1


def mark_retry(session: Session, claimed: Claimed, **kwargs) -> DeliveryStatus:
    finish = retry(claimed, **kwargs)
    record(session, [finish])
    return finish.status


def mark_failed(session: Session, claimed: Claimed, *, error: str, now: datetime, progress: str | None = None) -> bool:
    return record(session, [failed(claimed, error=error, now=now, progress=progress)]) == 1


def mark_skipped(session: Session, claimed: Claimed, *, reason: str, now: datetime) -> bool:
    return record(session, [skipped(claimed, reason=reason, now=now)]) == 1


def release(session: Session, claimed: Sequence[Claimed], *, now: datetime) -> None:
    record(session, [released(c, now=now) for c in claimed])


def reclaim_expired(session: Session, *, now: datetime) -> int:
    """Rows left in `sending` by a worker that died go back to pending."""
    expired = session.execute(
        select(Delivery.id).where(Delivery.status == DeliveryStatus.sending,
                                  col(Delivery.lease_until) < now).with_for_update(skip_locked=True)
    ).scalars().all()
    if not expired:
        return 0
    session.execute(sa.update(_table).where(_table.c.id.in_(expired), _table.c.status == "sending")
                    .values(status=DeliveryStatus.pending.value, lease_until=None, next_attempt_at=now))
    session.add_all(DeliveryAttempt(delivery_id=i, at=now, outcome="reclaimed",
                                    detail="lease expired while sending (worker stopped?); will be tried again")
                    for i in expired)
    return len(expired)


def retry_failed(session: Session, *, now: datetime, delivery_id: int | None = None) -> list[int]:
    """Put failed deliveries (one, or all) back in the queue, attempts reset."""
    query = select(Delivery.id).where(Delivery.status == DeliveryStatus.failed)
    if delivery_id is not None:
        query = query.where(Delivery.id == delivery_id)
    ids = list(session.execute(query).scalars().all())
    if ids:
        session.execute(sa.update(_table).where(_table.c.id.in_(ids))
                        .values(status=DeliveryStatus.pending.value, attempts=0, next_attempt_at=now))
        session.add_all(DeliveryAttempt(delivery_id=i, at=now, outcome="requeued", detail="retry requested")
                        for i in ids)
    return ids


@dataclass(frozen=True)
class LogEntry:
    delivery: Delivery
    address: str
    kind: str


def log(
    session: Session,
    *,
    status: DeliveryStatus | None = None,
    subscriber_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sitrep_id: int | None = None,
    limit: int = 100,
) -> list[LogEntry]:
    """Newest first; deliveries planned in [since, until), carrying the SITREP if given."""
    query = select(Delivery, Subscriber.address, Subscriber.kind).join(
        Subscriber, Subscriber.id == Delivery.subscriber_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    if subscriber_id is not None:
        query = query.where(Delivery.subscriber_id == subscriber_id)
    if since is not None:
        query = query.where(col(Delivery.created_at) >= since)
    if until is not None:
        query = query.where(col(Delivery.created_at) < until)
    if sitrep_id is not None:
        query = query.where(_carries(session, sitrep_id))
    query = query.order_by(col(Delivery.id).desc()).limit(limit)
    return [LogEntry(delivery=d, address=a, kind=k.value if hasattr(k, "value") else k)
            for d, a, k in session.exec(query).all()]


def _carries(session: Session, sitrep_id: int):
    """Deliveries whose JSON list of SITREP ids holds this one, in each backend's own JSON terms."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.cast(Delivery.sitrep_ids, postgresql.JSONB).contains([sitrep_id])
    each = sa.func.json_each(Delivery.sitrep_ids).table_valued("value")
    return sa.exists(sa.select(1).select_from(each).where(each.c.value == sitrep_id))


def attempts(session: Session, delivery_id: int) -> list[DeliveryAttempt]:
    return list(session.exec(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
                             .order_by(col(DeliveryAttempt.id))).all())


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Delivery.status, sa.func.count()).group_by(Delivery.status)).all()
    return {(s.value if hasattr(s, "value") else s): n for s, n in rows}
