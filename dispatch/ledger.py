"""The delivery ledger: the only code that writes Delivery and
DeliveryAttempt rows, and so the only place that sets a delivery's status.

    pending ──claim──▶ sending ──mark_sent──▶ sent
       ▲                  │ ──mark_retry──▶ pending (later) | failed (exhausted)
       │                  │ ──mark_failed─▶ failed
       │                  │ ──mark_skipped▶ skipped
       │                  │ ──mark_paused─▶ pending (after the pause; the attempt does not count)
       └──reclaim_expired─┘ (lease ran out: the worker died)
                          │ ──renew───────▶ sending (a live worker extends its lease)
                          │ ──hold────────▶ sending, held (the outcome could not be written)

Planning inserts one row per (subscriber, window) and relies on the unique
key, so planning twice inserts nothing. Claiming takes due pending rows with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers share the
work; on SQLite every transaction is BEGIN IMMEDIATE, which serialises claims.
Each claim increments ``attempts``; finishing a delivery checks that number, so
a worker whose lease expired cannot overwrite the work of the one that
reclaimed it — except a "sent": a message the server accepted is recorded
as sent while its row is still open, whoever holds it now, so that it is not
sent again. A live worker renews its leases (``renew``); a row whose outcome
cannot be written is held (``hold``): still `sending`, with a lease that
never runs out, so no reclaim sends it again. Every finish appends a
DeliveryAttempt row: the log. Text is bounded before it is written (``fit``),
with the same limits on SQLite and PostgreSQL. See docs/reliability.md.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dispatch import paging
from dispatch.desk import corrections
from dispatch.digest import Window
from dispatch.models import Delivery, DeliveryAttempt, DeliverySitrep, DeliveryStatus, Subscriber
from dispatch.retry import RetryPolicy

DEFAULT_LEASE = timedelta(minutes=5)
# Window keys of notices (confirmation, reminder): deliveries to one reader
# that carry no SITREP and are sent by the notice sender, not the digest sender.
NOTICE_PREFIX = "notice:"
# Window keys of event webhook posts (dispatch/events): event:<event id>, to a webhook, not a subscriber.
EVENT_PREFIX = "event:"
# Window keys of correction and retraction notices (dispatch/desk/corrections.py):
# correction:<sitrep>:<revision>, sent by the revision notice sender.
REVISION_PREFIXES = tuple(corrections.PREFIXES.values())
_table = Delivery.__table__
# A held row's lease: later than any clock will read, earlier than any backend's limit.
HELD_UNTIL = datetime(9999, 1, 1, tzinfo=timezone.utc)
MAX_RECEIPT = _table.c.receipt.type.length  # VARCHAR(500): PostgreSQL refuses more
MAX_TEXT = 2000  # last_error and attempt details: TEXT, bounded all the same
TRUNCATED = "… [truncated]"
_CHUNK = 500  # (id, attempts) pairs per statement


def fit(text: str | None, limit: int) -> str | None:
    """``text`` as every backend stores it: at most ``limit`` characters,
    cut with a visible marker; no NUL and no lone surrogate (PostgreSQL
    refuses the one, UTF-8 cannot carry the other)."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        text = text[:limit - len(TRUNCATED)] + TRUNCATED
    return text


@dataclass(frozen=True)
class Claimed:
    id: int
    subscriber_id: int
    window_key: str
    sitrep_ids: tuple[int, ...]
    attempts: int  # this claim's number: finishing checks it
    receipt: str | None  # progress of an earlier, partly sent attempt
    webhook_id: int | None = None  # an event delivery's webhook (subscriber_id is None then)


def plan(session: Session, subscriber_id: int, windows: Iterable[Window], *, now: datetime) -> int:
    """Insert a pending delivery per window; existing (subscriber, window)
    rows are left alone. Returns how many rows are new."""
    return plan_many(session, [(subscriber_id, w) for w in windows], now=now)


def plan_many(session: Session, planned: Sequence[tuple[int, Window]], *, now: datetime) -> int:
    """``plan`` for many subscribers in one statement, and the new rows'
    SITREPs in ``delivery_sitrep`` with a second one."""
    if not planned:
        return 0
    rows = [(subscriber_id, w.key, w.sitrep_ids) for subscriber_id, w in planned]
    dialect = session.get_bind().dialect.name
    connection = session.connection()
    inserted = connection.execute(_plan_statement(dialect), {"rows": rows, "now": now}).all()
    links = list(dict.fromkeys((sitrep_id, delivery_id) for delivery_id, sitrep_ids in inserted
                               for sitrep_id in sitrep_ids))  # a window names a SITREP once; a key must
    if links:
        connection.execute(_link_statement(dialect), {"links": links})
    return len(inserted)


def _unpacked(dialect: str, name: str):
    """The elements of a JSON array given as one parameter, as a table."""
    unpack = sa.func.json_array_elements if dialect == "postgresql" else sa.func.json_each
    return unpack(sa.bindparam(name, type_=sa.JSON)).table_valued(sa.column("value", sa.JSON)).c.value


@lru_cache(maxsize=4)
def _plan_statement(dialect: str):
    """INSERT … SELECT from one JSON array of [subscriber id, window key,
    SITREP ids] rows, skipping (subscriber, window) pairs already planned,
    returning the new rows' ids and SITREPs.

    One parameter, serialised in one go, instead of an executemany whose
    per-row parameter handling cost three times the database's own work at
    100,000 rows; RETURNING gives exactly the rows this statement added on
    both backends (psycopg reports no row count for an executemany).
    """
    row = _unpacked(dialect, "rows")
    now = sa.bindparam("now", type_=_table.c.created_at.type)
    rows = sa.select(row[0].as_integer(), row[1].as_string(), row[2], sa.literal(DeliveryStatus.pending.value),
                     sa.literal(0), now, now).where(sa.true())  # SQLite needs a WHERE before ON CONFLICT
    columns = ["subscriber_id", "window_key", "sitrep_ids", "status", "attempts", "next_attempt_at", "created_at"]
    # The dialect's own INSERT … ON CONFLICT, imported here: SQLAlchemy's
    # PostgreSQL dialect takes a few hundred milliseconds to import, which a
    # run on SQLite need not pay (a run on PostgreSQL has it already).
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(_table).from_select(columns, rows).on_conflict_do_nothing(
        index_elements=["subscriber_id", "window_key"]).returning(_table.c.id, _table.c.sitrep_ids)


@lru_cache(maxsize=4)
def _link_statement(dialect: str):
    """INSERT … SELECT of [SITREP id, delivery id] pairs from one JSON array."""
    pair = _unpacked(dialect, "links")
    return sa.insert(DeliverySitrep.__table__).from_select(
        ["sitrep_id", "delivery_id"], sa.select(pair[0].as_integer(), pair[1].as_integer()))


def flashed(session: Session, subscriber_ids: Iterable[int], keys: Iterable[str]) -> set[tuple[int, str]]:
    """Which of these readers hold which of these FLASH deliveries (window
    keys), not given up on: (subscriber id, window key) pairs. Read through
    the (subscriber, window) key, a chunk of readers at a time."""
    ids, keys = sorted(set(subscriber_ids)), sorted(set(keys))
    if not ids or not keys:
        return set()
    found: set[tuple[int, str]] = set()
    for start in range(0, len(ids), _CHUNK * 2):
        found.update(tuple(row) for row in session.execute(
            select(_table.c.subscriber_id, _table.c.window_key).where(
                _table.c.subscriber_id.in_(ids[start:start + _CHUNK * 2]), _table.c.window_key.in_(keys),
                _table.c.status.not_in([DeliveryStatus.failed.value, DeliveryStatus.skipped.value]))).all())
    return found


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


def plan_event(session: Session, webhook_id: int, *, event_id: str, now: datetime) -> None:
    """An event for one event webhook, due now (dispatch/events). Its window
    key names the event, so planning it twice for a webhook adds nothing."""
    session.add(Delivery(webhook_id=webhook_id, window_key=f"{EVENT_PREFIX}{event_id}", sitrep_ids=[],
                         status=DeliveryStatus.pending, next_attempt_at=now, created_at=now))


def plan_revision_notices(session: Session, subscriber_ids: Sequence[int], *, window_key: str, sitrep_id: int,
                          now: datetime) -> int:
    """A correction or retraction notice (``window_key`` names the revision)
    for each of these readers, due now. Planning it twice adds nothing (the
    (subscriber, window) key); the SITREP is linked as for a digest, so the
    SITREP's log lists its notices too. Returns how many rows are new."""
    if not window_key.startswith(REVISION_PREFIXES):
        raise ValueError(f"{window_key!r} is not a revision notice key")
    window = Window(key=window_key, start=now, end=now, sitrep_ids=(sitrep_id,))
    return plan_many(session, [(subscriber_id, window) for subscriber_id in subscriber_ids], now=now)


def plan_events(session: Session, planned: Sequence[tuple[int, str]], *, now: datetime) -> int:
    """``plan_event`` for many (webhook id, event id) pairs at once, as one
    Core statement: a 100,000-row import's events build no ORM object each."""
    if not planned:
        return 0
    session.execute(sa.insert(_table), [
        {"webhook_id": webhook_id, "subscriber_id": None, "window_key": f"{EVENT_PREFIX}{event}", "sitrep_ids": [],
         "status": DeliveryStatus.pending, "attempts": 0, "next_attempt_at": now, "created_at": now}
        for webhook_id, event in planned])
    return len(planned)


def event_id(window_key: str) -> str:
    """``event:evt_…`` -> ``evt_…``."""
    return window_key[len(EVENT_PREFIX):]


# Pending FLASH rows, written as the partial index ix_delivery_flash_due
# (models.FLASH_DUE) is, so that both backends read them through it.
_FLASH_DUE = sa.and_(_table.c.status == sa.literal_column("'pending'"),
                     _table.c.window_key.like(sa.literal_column("'flash:%'")))


def claim(session: Session, *, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE,
          worker_id: int | None = None, notices: bool = False, events: bool = False,
          revisions: bool = False, share_tail: bool = False) -> list[Claimed]:
    """Due digests, or (``notices``) due notices, or (``events``) due event
    webhook posts, or (``revisions``) due correction and retraction notices:
    each has senders of its own, so a slow webhook endpoint never holds up an
    email. Due FLASH deliveries are digests claimed first, ahead of any
    backlog: a FLASH is sent at once. ``share_tail``: digests claimed in
    smaller runs as the queue runs out (``tail_limit``)."""
    kind = "notices" if notices else "events" if events else "revisions" if revisions else "digests"
    values = {"b_now": now, "b_limit": limit, "b_lease_until": now + lease, "b_worker": worker_id}
    if kind == "digests":
        flashes = _claim(session, _claim_statement("flashes"), values)
        if flashes:
            return flashes
        if share_tail and limit > TAIL_FLOOR:
            due = session.execute(_due_count_statement(), {"b_now": now, "b_cap": limit * TAIL_SHARE}).scalar_one()
            values["b_limit"] = tail_limit(due, limit)
    return _claim(session, _claim_statement(kind), values)


def any_due(session: Session, *, now: datetime) -> bool:
    """Whether any digest (FLASHes included) is due: what a claim would look
    for, read without claiming (on SQLite, without the write lock)."""
    return session.execute(_any_due_statement(), {"b_now": now}).first() is not None


@lru_cache(maxsize=1)
def _any_due_statement():
    now = sa.bindparam("b_now", type_=_table.c.next_attempt_at.type)
    return select(_table.c.id).where(*_due_where("digests", now)).limit(1)


TAIL_SHARE = 8  # the last deliveries of a pass are shared among about this many sender threads
TAIL_FLOOR = 20  # ... in claims no smaller than this


def tail_limit(due: int, limit: int) -> int:
    """A claim's size once fewer than ``limit × TAIL_SHARE`` deliveries are
    due: a share of what is left, so that the pass's last claims are small
    and every sender thread ends at about the same time, instead of one
    sending a whole claim while the others have nothing left."""
    return max(min(limit, TAIL_FLOOR), min(limit, -(-due // TAIL_SHARE)))


@lru_cache(maxsize=1)
def _due_count_statement():
    """How many digests are due, counted up to ``b_cap`` (a bounded look at the index)."""
    now = sa.bindparam("b_now", type_=_table.c.next_attempt_at.type)
    due = select(_table.c.id).where(*_due_where("digests", now)).limit(sa.bindparam("b_cap", type_=sa.Integer))
    return select(sa.func.count()).select_from(due.subquery())


def _due_where(kind: str, now) -> tuple:
    keys = _table.c.window_key
    revision_keys = sa.or_(*(keys.startswith(prefix) for prefix in REVISION_PREFIXES))
    which = {"notices": keys.startswith(NOTICE_PREFIX), "events": keys.startswith(EVENT_PREFIX),
             "revisions": revision_keys,
             "digests": sa.not_(keys.startswith(NOTICE_PREFIX) | keys.startswith(EVENT_PREFIX) | revision_keys)}
    return _table.c.status == DeliveryStatus.pending.value, _table.c.next_attempt_at <= now, which[kind]


@lru_cache(maxsize=8)
def _claim_statement(kind: str):
    """The claim of one kind of delivery, built once (it runs for every
    batch, and building a statement costs more than running it): an UPDATE
    of the first ``b_limit`` due rows, oldest due first, to `sending`, with
    the lease, the claim's number and the claimer, RETURNING the rows."""
    now = sa.bindparam("b_now", type_=_table.c.next_attempt_at.type)
    if kind == "flashes":
        due = select(_table.c.id).where(_FLASH_DUE, _table.c.next_attempt_at <= now)
    else:
        due = select(_table.c.id).where(*_due_where(kind, now))
    due = (due.order_by(_table.c.next_attempt_at, _table.c.id).limit(sa.bindparam("b_limit", type_=sa.Integer))
           .with_for_update(skip_locked=True))
    return (
        sa.update(_table)
        .where(_table.c.id.in_(due.scalar_subquery()))
        .values(status=DeliveryStatus.sending.value,
                lease_until=sa.bindparam("b_lease_until", type_=_table.c.lease_until.type),
                attempts=_table.c.attempts + 1, claimed_by=sa.bindparam("b_worker", type_=sa.Integer))
        .returning(_table.c.id, _table.c.subscriber_id, _table.c.window_key, _table.c.sitrep_ids,
                   _table.c.attempts, _table.c.receipt, _table.c.webhook_id)
    )


def _claim(session: Session, statement, values: dict) -> list[Claimed]:
    rows = session.execute(statement, values).all()
    # Rows unpacked as tuples: reading a Row's columns by name costs about a microsecond each.
    claimed = [Claimed(id=id_, subscriber_id=subscriber_id, window_key=window_key, sitrep_ids=tuple(sitrep_ids),
                       attempts=attempts, receipt=receipt, webhook_id=webhook_id)
               for id_, subscriber_id, window_key, sitrep_ids, attempts, receipt, webhook_id in rows]
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
    left_out: tuple[int, ...] = ()  # SITREPs planned into it that the sent message did not carry (withdrawn)


def sent(claimed: Claimed, *, receipt: str, now: datetime, carried: Iterable[int] | None = None) -> Finish:
    """``carried``: the SITREPs the message showed, when known. Those planned
    into the delivery but left out (withdrawn before it was sent) lose their
    link to it, so a later correction or retraction of them is not sent to a
    reader who never had them (``revisions.received`` reads the links)."""
    kept = None if carried is None else set(carried)
    left_out = () if kept is None else tuple(i for i in claimed.sitrep_ids if i not in kept)
    return Finish(claimed, now, DeliveryStatus.sent, "sent", receipt, receipt=receipt, last_error=None,
                  next_attempt_at=now, sent_at=now, left_out=left_out)


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


def paused(claimed: Claimed, *, reason: str, until: datetime, now: datetime,
           progress: str | None = None) -> Finish:
    """Waiting for the installation's credentials to work again: back to
    pending until ``until``. Not the delivery's fault, so the attempt does
    not count towards giving up."""
    return Finish(claimed, now, DeliveryStatus.pending, "paused", f"{reason}; next attempt {until.isoformat()}",
                  receipt=progress if progress is not None else claimed.receipt, last_error=reason,
                  next_attempt_at=until, attempts=claimed.attempts - 1)


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


# A "sent" whose claim was taken over: the server accepted the message, so
# while the row is still open (reclaimed, or claimed again and not finished)
# it is recorded as sent, and its new holder finds it gone instead of
# sending it a second time. Its attempt count stays the new holder's.
_SENT_LATE = (
    sa.update(_table)
    .where(_table.c.id == sa.bindparam("b_id"),
           _table.c.status.in_([DeliveryStatus.pending.value, DeliveryStatus.sending.value]),
           _table.c.lease_until.is_(None) | (_table.c.lease_until < HELD_UNTIL))
    .values(status=DeliveryStatus.sent.value, lease_until=None, receipt=sa.bindparam("b_receipt"),
            last_error=None, next_attempt_at=sa.bindparam("b_next"), sent_at=sa.bindparam("b_sent_at"))
)


_ATTEMPT = sa.insert(DeliveryAttempt.__table__)
_links = DeliverySitrep.__table__
_UNLINK = sa.delete(_links).where(_links.c.delivery_id == sa.bindparam("b_delivery"),
                                  _links.c.sitrep_id == sa.bindparam("b_sitrep"))


def record(session: Session | sa.Connection, finishes: Sequence[Finish]) -> int:
    """Write the finishes and their log rows (on a session, or a Core
    connection in a transaction); returns how many rows this worker still
    owned (the others' claims had been taken over)."""
    if not finishes:
        return 0
    params = [
        {"b_id": f.claimed.id, "b_claim": f.claimed.attempts, "b_status": f.status.value,
         "b_receipt": fit(f.receipt, MAX_RECEIPT), "b_error": fit(f.last_error, MAX_TEXT),
         "b_next": f.next_attempt_at, "b_sent_at": f.sent_at,
         "b_attempts": f.claimed.attempts if f.attempts is None else f.attempts} for f in finishes
    ]
    # On the session's connection, as prepared executemanys (_Prepared): this
    # runs every 20 messages, and SQLAlchemy's own executemany costs more per
    # row than the database's work.
    connection = session if isinstance(session, sa.Connection) else session.connection()
    owned = _prepared(_FINISH, connection.dialect).executemany(connection, params)
    stale = ""
    if owned != len(finishes):  # rare: a claim in this run was taken over
        late = sum(connection.execute(_SENT_LATE, p).rowcount for f, p in zip(finishes, params)
                   if f.status == DeliveryStatus.sent)
        stale = (" (a claim in this run had expired and was taken over"
                 + (f"; {late} accepted message(s) recorded as sent all the same)" if late else ")"))
        owned += late
    unlinked = [{"b_delivery": f.claimed.id, "b_sitrep": i} for f in finishes
                if f.status == DeliveryStatus.sent for i in f.left_out]
    if unlinked:  # rare: a SITREP withdrawn between planning and sending
        connection.execute(_UNLINK, unlinked)
    _prepared(_ATTEMPT, connection.dialect).executemany(connection, [
        {"delivery_id": f.claimed.id, "at": f.at, "outcome": f.outcome, "detail": fit(f.detail + stale, MAX_TEXT)}
        for f in finishes
    ])
    return owned


class _Prepared:
    """A statement compiled once for a dialect and run as an executemany
    straight on the DBAPI cursor (``exec_driver_sql``), with the parameter
    rows built here as SQLAlchemy builds them: the same SQL text, each value
    through its type's bind processor, the statement's own literals added.
    SQLAlchemy's executemany does this per row through several layers."""

    def __init__(self, statement, dialect, keys: Sequence[str] | None):
        compiled = statement.compile(dialect=dialect, column_keys=keys, for_executemany=True)
        if compiled.insert_prefetch or compiled.update_prefetch:  # Python-side defaults: not handled here
            raise ValueError("a statement with Python-side column defaults cannot be prepared")
        self.sql = compiled.string
        self.positional = compiled.positional
        names = compiled.positiontup if compiled.positional else list(dict.fromkeys(compiled.bind_names.values()))
        self.names = tuple(names)
        # Per name: its bind processor (or None), and whether the statement fixes its value
        # (a literal such as status = 'sending'); fixed values are processed here, once.
        self.plan = []
        for name in names:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                self.plan.append((name, process, False, None))
            else:
                value = bind.effective_value
                self.plan.append((name, None, True, process(value) if process else value))

    def rows(self, params: Sequence[dict]) -> list:
        plan = self.plan
        rows = [[fixed_value if fixed else process(given[name]) if process else given[name]
                 for name, process, fixed, fixed_value in plan] for given in params]
        if self.positional:
            return [tuple(row) for row in rows]
        return [dict(zip(self.names, row)) for row in rows]

    def executemany(self, connection, params: Sequence[dict]) -> int:
        """Run it once per parameter set; the number of rows it matched in all."""
        return connection.exec_driver_sql(self.sql, self.rows(params)).rowcount


@lru_cache(maxsize=16)
def _prepared(statement, dialect) -> _Prepared:
    keys = None if statement is not _ATTEMPT else ("delivery_id", "at", "outcome", "detail")
    return _Prepared(statement, dialect, keys)


def _owned(claims: Sequence[Claimed]):
    """Rows these claims still hold: `sending`, with the claim's attempt number, not held."""
    return sa.and_(_table.c.status == DeliveryStatus.sending.value,
                   sa.tuple_(_table.c.id, _table.c.attempts).in_([(c.id, c.attempts) for c in claims]),
                   _table.c.lease_until < HELD_UNTIL)


def renew(session: Session, claims: Sequence[Claimed], *, until: datetime) -> set[int]:
    """Extend the leases of the rows these claims still hold to ``until``.
    Returns the ids they no longer hold (taken over, or finished).

    A row another transaction has locked (its record being written) is
    skipped rather than waited for, so renewing never deadlocks with a
    record; it counts as held, and the next renewal gets it if it is still
    open.
    """
    lost: set[int] = set()
    for start in range(0, len(claims), _CHUNK):
        chunk = claims[start:start + _CHUNK]
        locked = select(_table.c.id).where(_owned(chunk)).with_for_update(skip_locked=True)
        renewed = set(session.execute(sa.update(_table).where(_table.c.id.in_(locked.scalar_subquery()))
                                      .values(lease_until=until).returning(_table.c.id)).scalars())
        rest = [c for c in chunk if c.id not in renewed]
        if rest:
            busy = set(session.execute(select(_table.c.id).where(_owned(rest))).scalars())
            lost |= {c.id for c in rest} - busy
    return lost


def hold(session: Session, claims: Sequence[Claimed], *, now: datetime, reason: str | None = None) -> int:
    """Park claims whose outcome could not be written: they stay `sending`
    with a lease that never runs out, so reclaiming never sends them again.
    `dispatch status` counts them; `dispatch retry ID` requeues one. With a
    ``reason``, each gets a log row too. Returns how many were held."""
    held = 0
    for start in range(0, len(claims), _CHUNK):
        held += session.execute(sa.update(_table).where(_owned(claims[start:start + _CHUNK]))
                                .values(lease_until=HELD_UNTIL)).rowcount
    if reason is not None and held:
        session.execute(sa.insert(DeliveryAttempt.__table__), [
            {"delivery_id": c.id, "at": now, "outcome": "held", "detail": fit(reason, MAX_TEXT)} for c in claims])
    return held


def _is_held():
    return sa.and_(_table.c.status == DeliveryStatus.sending.value, _table.c.lease_until >= HELD_UNTIL)


def held_ids(session: Session, *, limit: int = 20) -> tuple[int, list[int]]:
    """How many deliveries are held, and the ids of the first few."""
    total = session.execute(select(sa.func.count()).select_from(_table).where(_is_held())).scalar_one()
    ids = session.execute(select(_table.c.id).where(_is_held()).order_by(_table.c.id).limit(limit)).scalars().all()
    return total, list(ids)


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


def mark_paused(session: Session, claimed: Claimed, *, reason: str, until: datetime, now: datetime) -> bool:
    return record(session, [paused(claimed, reason=reason, until=until, now=now)]) == 1


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
    """Put failed deliveries (one, or all) back in the queue, attempts reset.
    One delivery named by its id may also be a held one: a person has looked."""
    failed_rows = _table.c.status == DeliveryStatus.failed.value
    query = select(_table.c.id).where(failed_rows)
    if delivery_id is not None:
        query = select(_table.c.id).where(failed_rows | _is_held(), _table.c.id == delivery_id)
    ids = list(session.execute(query).scalars().all())
    if ids:
        session.execute(sa.update(_table).where(_table.c.id.in_(ids))
                        .values(status=DeliveryStatus.pending.value, attempts=0, next_attempt_at=now,
                                lease_until=None))
        session.add_all(DeliveryAttempt(delivery_id=i, at=now, outcome="requeued", detail="retry requested")
                        for i in ids)
    return ids


@dataclass(frozen=True)
class LogEntry:
    delivery: Delivery
    address: str
    kind: str


def _logged(session: Session, *, status, subscriber_id, since, until, sitrep_id, query=None):
    """The filtered select of the log, not yet ordered or limited. Each
    filter reads an index (migration 0011): status and created_at lead
    indexes that end in the id; a subscriber's rows come from the
    (subscriber, window) key; a SITREP's from its rows in delivery_sitrep."""
    if query is None:
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
    return query


def _entries(session: Session, query) -> list[LogEntry]:
    return [LogEntry(delivery=d, address=a, kind=k.value if hasattr(k, "value") else k)
            for d, a, k in session.exec(query).all()]


def log(
    session: Session,
    *,
    status: DeliveryStatus | None = None,
    subscriber_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sitrep_id: int | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[LogEntry]:
    """Newest first (by id); deliveries planned in [since, until), carrying
    the SITREP if given; ``after``: only ids below it (the next page)."""
    query = _logged(session, status=status, subscriber_id=subscriber_id, since=since, until=until,
                    sitrep_id=sitrep_id)
    if after is not None:
        query = query.where(col(Delivery.id) < after)
    return _entries(session, query.order_by(col(Delivery.id).desc()).limit(limit))


NARROW_SPAN = timedelta(days=7)  # a time filter at most this wide is read through its index


def log_page(
    session: Session,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    status: DeliveryStatus | None = None,
    subscriber_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sitrep_id: int | None = None,
) -> "paging.Page[LogEntry]":
    """One page of ``log``, with the cursors beside it (``dispatch.paging``).

    The page's ids are chosen first, from the indexes alone (a day's rows,
    or one status's, without reading the rows or their subscribers), and
    only those rows are then read whole: choosing with the join read and
    sorted a whole day of joined rows per page."""
    id_column = _table.c.id
    narrow = since is not None and until is not None and until - since <= NARROW_SPAN
    if sitrep_id is None:
        ids = _logged(session, status=status, subscriber_id=subscriber_id, since=since, until=until,
                      sitrep_id=None, query=select(id_column))
        # A few days' rows: read through the created_at index and sorted, rather
        # than the whole log walked newest first until that day (PostgreSQL's
        # estimate, which takes rows to be spread evenly over ids, picks the walk).
        sort_key = id_column + 0 if narrow else None
    else:
        # A SITREP's deliveries, newest first, are a range of the link table's
        # key (sitrep_id, delivery_id): walked backwards, each other filter
        # checked through the delivery's primary key, stopped when a page is full.
        links = DeliverySitrep.__table__
        id_column, sort_key = links.c.delivery_id, None
        ids = select(id_column).where(links.c.sitrep_id == sitrep_id)
        if any(v is not None for v in (status, subscriber_id, since, until)):
            ids = _logged(session, status=status, subscriber_id=subscriber_id, since=since, until=until,
                          sitrep_id=None, query=ids.join(_table, _table.c.id == id_column))
    chosen = paging.fetch(ids, id_column, lambda q: session.execute(q).scalars().all(), row_id=int,
                          limit=limit, after=after, before=before, descending=True, sort_key=sort_key)
    entries = _entries(session, select(Delivery, Subscriber.address, Subscriber.kind)
                       .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                       .where(col(Delivery.id).in_(chosen.items)).order_by(col(Delivery.id).desc()))
    return paging.Page(items=entries, next=chosen.next, previous=chosen.previous)


def today_by_status(session: Session, *, since: datetime) -> dict[DeliveryStatus, int]:
    """Deliveries planned since then, by status: a covering read of the
    (created_at, status) index over one day's rows, never the whole log."""
    # One count per status, without GROUP BY: grouped, SQLite reads the whole
    # (status, id) index in status order instead of one day of this one.
    counted = [sa.func.count().filter(_table.c.status == s) for s in DeliveryStatus]
    row = session.execute(select(*counted).where(_table.c.created_at >= since)).one()
    return {s: n for s, n in zip(DeliveryStatus, row) if n}


def _carries(session: Session, sitrep_id: int):
    """Deliveries that carry this SITREP (``delivery_sitrep``)."""
    links = DeliverySitrep.__table__
    return col(Delivery.id).in_(select(links.c.delivery_id).where(links.c.sitrep_id == sitrep_id))


def attempts(session: Session, delivery_id: int) -> list[DeliveryAttempt]:
    return list(session.exec(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
                             .order_by(col(DeliveryAttempt.id))).all())


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Delivery.status, sa.func.count()).group_by(Delivery.status)).all()
    return {(s.value if hasattr(s, "value") else s): n for s, n in rows}


@dataclass(frozen=True)
class QueueStats:
    by_status_channel: dict[tuple[str, str], int]
    due: int
    oldest_due_age_seconds: float


def queue_stats(session: Session, *, now: datetime) -> QueueStats:
    """For monitoring: deliveries by status and channel, how many are due
    and how long the oldest due one has waited. Two grouped counts."""
    sub = Subscriber.__table__
    grouped = session.execute(select(_table.c.status, sub.c.kind, sa.func.count())
                              .select_from(_table.outerjoin(sub, sub.c.id == _table.c.subscriber_id))
                              .group_by(_table.c.status, sub.c.kind)).all()
    by = {(_value(status), _value(kind) if kind is not None else "webhook"): n for status, kind, n in grouped}
    due, oldest = session.execute(select(sa.func.count(), sa.func.min(_table.c.next_attempt_at)).where(
        _table.c.status == DeliveryStatus.pending.value, _table.c.next_attempt_at <= now)).one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=timezone.utc)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return QueueStats(by_status_channel=by, due=due, oldest_due_age_seconds=age)


def _value(v):
    return v.value if hasattr(v, "value") else v
