"""Planning: turn due windows into pending deliveries.

Two kinds of work, both idempotent (the ledger's unique key):
- daily/weekly subscribers whose ``next_due_at`` has passed get their due
  window planned and their cursors (``planned_through``, ``next_due_at``) moved,
  in the same transaction as the inserted deliveries;
- each newly approved SITREP is fanned out once to the immediate subscribers;
- each released FLASH is fanned out once to every matching reader, whatever
  their cadence (``plan_flash``, first, so that the digests planned next
  know what went out in it and leave it out).

Windows are planned ``settle`` after they end, so a SITREP whose approval was
still committing at the window's end is not missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dispatch import db, digest, ledger, views
from dispatch.models import (
    Cadence,
    Delivery,
    DeliveryStatus,
    Sitrep,
    SitrepStatus,
    Subscriber,
    SubscriberStatus,
)

SETTLE = timedelta(seconds=60)
BATCH = 5000
FIRST_BATCH = 250  # the first batches are small, so sending (in other processes) starts soon


def batch_sizes(batch: int):
    """Readers read per batch: ``FIRST_BATCH`` doubling up to ``batch``.
    Senders take each batch as soon as it is written, and a big first one
    would keep them waiting for all of it; later ones are big, so a long
    list costs few queries."""
    size = min(batch, FIRST_BATCH)
    while True:
        yield size
        size = min(batch, size * 2)


@dataclass
class PlanReport:
    subscribers_checked: int = 0
    deliveries_planned: int = 0
    sitreps_fanned_out: int = 0
    flashes_fanned_out: int = 0


def plan_due(engine: Engine, *, now: datetime, settle: timedelta = SETTLE, batch: int = BATCH,
             flash: bool = True) -> PlanReport:
    """``flash=False``: the caller fans FLASHes out itself (``dispatch run``
    does, more often than it plans, under a lock of its own)."""
    report = PlanReport()
    if flash:
        plan_flash(engine, now=now, batch=batch, report=report)
    _plan_digests(engine, cutoff=now - settle, now=now, batch=batch, report=report)
    _plan_immediate(engine, now=now, batch=batch, report=report)
    return report


# Kind and cadence as the stored strings: the Enum round trip (string →
# member → .value) would be done for every reader only to be undone.
_SCHEDULE_COLUMNS = (Subscriber.id, sa.type_coerce(Subscriber.kind, sa.String).label("kind"), Subscriber.address,
                     Subscriber.timezone, Subscriber.send_at,
                     sa.type_coerce(Subscriber.cadence, sa.String).label("cadence"), Subscriber.weekday,
                     Subscriber.created_at, Subscriber.planned_through)


class _Row(NamedTuple):
    """One subscriber as planning reads it: plain values, no Recipient yet
    (one is made per distinct plan shape, not per reader)."""

    id: int
    kind: str
    address: str
    timezone: str
    send_at: str
    cadence: str
    weekday: int
    created_at: datetime
    planned_through: datetime | None
    regions: tuple[str, ...]  # slugs, sorted
    analysts: tuple[str, ...]  # slugs, by name

    def recipient(self) -> digest.Recipient:
        return digest.Recipient(id=self.id, kind=self.kind, address=self.address, timezone=self.timezone,
                                send_at=self.send_at, cadence=self.cadence, weekday=self.weekday,
                                created_at=self.created_at, planned_through=self.planned_through,
                                regions=frozenset(self.regions), analysts=frozenset(self.analysts))


def due_estimate(session: Session, *, now: datetime, settle: timedelta = SETTLE) -> int:
    """Before planning: about how many deliveries a pass at ``now`` will
    send — those already due, one for every reader whose digest is due, and
    every active reader while a SITREP waits to be fanned out (at most one
    FLASH or immediate delivery each, for the pass's scale). It decides how
    many sender processes to start, so a rough count does: each of the
    three is one count on an index."""
    pending = session.exec(select(sa.func.count()).select_from(Delivery).where(
        Delivery.status == DeliveryStatus.pending, col(Delivery.next_attempt_at) <= now)).one()
    cutoff = now - settle
    digests = session.exec(select(sa.func.count()).select_from(Subscriber).where(
        Subscriber.status == SubscriberStatus.active, Subscriber.cadence != Cadence.immediate,
        sa.or_(col(Subscriber.next_due_at).is_(None), col(Subscriber.next_due_at) <= cutoff))).one()
    fanning = session.exec(select(Sitrep.id).where(
        Sitrep.status == SitrepStatus.approved, col(Sitrep.immediate_planned_at).is_(None),
        col(Sitrep.approved_at) <= now).limit(1)).first()
    readers = session.exec(select(sa.func.count()).select_from(Subscriber).where(
        Subscriber.status == SubscriberStatus.active)).one() if fanning is not None else 0
    return pending + digests + readers


def _active_rows(session, *conditions, after_id: int, batch: int, either: tuple = ()) -> list[_Row]:
    """The next batch (by id) of active subscribers meeting the conditions,
    and one of ``either`` if given, read with plain Core queries: planning
    may read every subscriber, and ORM objects would cost several times more.

    Each of ``either`` becomes a branch of a UNION ALL (they must not
    overlap): each branch can use the (status, next_due_at) index, where
    their OR would have the database read every subscriber on every tick.
    """
    where = (Subscriber.status == SubscriberStatus.active, col(Subscriber.id) > after_id, *conditions)
    if either:
        due = sa.union_all(*(select(*_SCHEDULE_COLUMNS).where(*where, one) for one in either)).subquery()
        query = select(due).order_by(due.c.id)
    else:
        query = select(*_SCHEDULE_COLUMNS).where(*where).order_by(col(Subscriber.id))
    rows = session.connection().execute(query.limit(batch)).all()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    low, high = ids[0], ids[-1]

    def these(column):
        # A dense run of ids (a new list) is cheaper as a range; scattered due
        # readers (one time zone's morning) as their ids, not every row between.
        return column.between(low, high) if high - low < 4 * len(ids) else column.in_(ids)

    regions, analysts = views.preference_sets(session, these)
    followed = {id_: tuple(slug for slug, _ in pairs) for id_, pairs in analysts.items()}
    none: tuple = ()
    # Rows unpacked as tuples: reading a Row's columns by name costs about a
    # microsecond each, ten times over for every reader.
    return [
        _Row(id_, kind, address, zone, send_at, cadence, weekday, created_at, planned_through,
             tuple(regions.get(id_, none)), followed.get(id_, none))
        for id_, kind, address, zone, send_at, cadence, weekday, created_at, planned_through in rows
    ]


def _plan_digests(engine: Engine, *, cutoff: datetime, now: datetime, batch: int, report: PlanReport) -> None:
    """Batch by batch: read the due readers and work out their plans, then
    write them. Each batch is written (deliveries and cursors in one
    transaction) in a thread of its own while the next is read and planned:
    the database's work overlaps the Python work, and a batch only reads ids
    above those being written. At most one write is in flight."""
    last_id = 0
    sitreps_since: dict[datetime, list] = {}
    # Readers with the same schedule, cursor and preferences get the same plan:
    # work it out once (a large list has far fewer shapes than readers).
    plans: dict[tuple, digest.Plan] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="planner-writer") as writer:
        writing: Future | None = None
        for size in batch_sizes(batch):
            # A read-only session: on SQLite it does not wait for the batch being written.
            with db.read_scope(engine) as session:
                due = _active_rows(
                    session, Subscriber.cadence != Cadence.immediate,
                    either=(col(Subscriber.next_due_at).is_(None), col(Subscriber.next_due_at) <= cutoff),
                    after_id=last_id, batch=size)
                starts = [digest.planning_start(r.cadence, r.weekday, r.timezone, r.send_at,
                                                created_at=r.created_at, planned_through=r.planned_through)
                          for r in due]
                since = min(starts, default=None)
                if due and since not in sitreps_since:
                    sitreps_since[since] = views.approved_sitreps(session, approved_after=since,
                                                                  approved_until=cutoff)
            if not due:
                break
            last_id = due[-1].id
            sitreps = sitreps_since[since]
            planned = []
            cursors: dict[tuple[datetime, datetime], list[int]] = {}
            for row, start in zip(due, starts):
                shape = (row.cadence, row.timezone, row.send_at, row.weekday, start, row.regions, row.analysts)
                plan = plans.get(shape)
                if plan is None:
                    plan = plans[shape] = digest.plan(row.recipient(), [s for s in sitreps if s.approved_at > start],
                                                      now=cutoff)
                planned += [(row.id, window) for window in plan.windows]
                cursors.setdefault((plan.planned_through, plan.next_due_at), []).append(row.id)
            flashes = {s.id: digest.flash_key(s) for s in sitreps if s.flash}
            if flashes and planned:
                planned = _without_flashed(engine, planned, flashes)
            if writing is not None:
                report.deliveries_planned += writing.result()  # a failed write stops planning here
            writing = writer.submit(_write_batch, engine, planned, cursors, now=now)
            report.subscribers_checked += len(due)
        if writing is not None:
            report.deliveries_planned += writing.result()


def _without_flashed(engine: Engine, planned: list[tuple[int, digest.Window]],
                    flashes: dict[int, str]) -> list[tuple[int, digest.Window]]:
    """Digest windows less the FLASH SITREPs (``flashes``: id → FLASH window
    key) that reached their reader in a FLASH (``flashed_for``)."""
    carrying = {reader for reader, window in planned if any(i in flashes for i in window.sitrep_ids)}
    if not carrying:
        return planned
    with db.read_scope(engine) as session:
        got = flashed_for(session, carrying, flashes)
    kept = []
    for reader, window in planned:
        left = digest.without_flashed(window, got.get(reader, ()))
        if left is not None:
            kept.append((reader, left))
    return kept


def flashed_for(session: Session, readers: Iterable[int], flashes: dict[int, str]) -> dict[int, set[int]]:
    """Which of these FLASH SITREPs (``flashes``: id → FLASH window key)
    reached each of these readers in a FLASH, by reader: a FLASH the ledger
    holds for them and has not given up on (a failed or skipped one is
    carried by their digest instead), or one still being fanned out (it will
    reach every matching active reader). Their digests leave these out."""
    readers = set(readers)
    if not readers or not flashes:
        return {}
    unfinished = set(session.exec(select(Sitrep.id).where(col(Sitrep.id).in_(list(flashes)),
                                                          col(Sitrep.immediate_planned_at).is_(None))).all())
    by_key = {key: sitrep_id for sitrep_id, key in flashes.items()}
    found: dict[int, set[int]] = {reader: set(unfinished) for reader in readers} if unfinished else {}
    for reader, key in ledger.flashed(session, readers, by_key):
        found.setdefault(reader, set()).add(by_key[key])
    return found


def _write_batch(engine: Engine, planned: list[tuple[int, digest.Window]],
                 cursors: dict[tuple[datetime, datetime], list[int]], *, now: datetime) -> int:
    """A batch's deliveries and its readers' new cursors (digests), in one transaction."""
    with db.session_scope(engine) as session:
        count = ledger.plan_many(session, planned, now=now)
        # Readers in one time zone share their cursors: one UPDATE per pair, not per reader.
        for (through, next_due), ids in cursors.items():
            session.execute(sa.update(Subscriber).where(col(Subscriber.id).in_(ids))
                            .values(planned_through=through, next_due_at=next_due))
    return count


def _plan_immediate(engine: Engine, *, now: datetime, batch: int, report: PlanReport) -> None:
    """Fan each newly approved SITREP out to the immediate readers: every
    batch of readers is read once for all such SITREPs, and each SITREP is
    marked done when the last batch is planned (planning again after a crash
    inserts nothing twice)."""
    with db.session_scope(engine) as session:
        pending_ids = session.exec(
            # An embargoed SITREP (approved for a later instant) waits for that instant.
            select(Sitrep.id).where(Sitrep.status == SitrepStatus.approved, col(Sitrep.approved_at) <= now,
                                    col(Sitrep.immediate_planned_at).is_(None),
                                    sa.not_(col(Sitrep.flash)))  # a FLASH reaches them by plan_flash
            .order_by(col(Sitrep.approved_at))
        ).all()
    if not pending_ids:
        return
    last_id = 0
    for size in batch_sizes(batch):
        # Read outside the write: on SQLite senders can claim what is written meanwhile.
        with db.read_scope(engine) as session:
            current = views.approved_sitreps(session, ids=pending_ids)  # a SITREP withdrawn meanwhile drops out
            readers = _active_rows(session, Subscriber.cadence == Cadence.immediate, after_id=last_id, batch=size)
        if not readers:
            _mark_fanned_out(engine, current, now=now)
            report.sitreps_fanned_out += len(current)
            return
        last_id = readers[-1].id
        planned = [(r.id, window) for r in readers for window in digest.immediate_windows(r.recipient(), current)]
        report.deliveries_planned += _write_batch(engine, planned, {}, now=now)
        report.subscribers_checked += len(readers)


def _mark_fanned_out(engine: Engine, sitreps: list, *, now: datetime) -> None:
    with db.session_scope(engine) as session:
        for sitrep in sitreps:
            session.get(Sitrep, sitrep.id).immediate_planned_at = now


def plan_flash(engine: Engine, *, now: datetime, batch: int = BATCH, report: PlanReport | None = None) -> PlanReport:
    """Fan each released FLASH out to every matching active reader, whatever
    their cadence and send time: one delivery each (window key
    ``digest.flash_key``), planned through the ledger like every other.

    As ``_plan_immediate``: readers are read a batch at a time (plain rows,
    one insert per batch) for all such SITREPs together, and each SITREP is
    marked done (``immediate_planned_at``, so the immediate fan-out leaves
    it alone too) when the last batch is planned; after a crash, planning
    again inserts nothing twice. With nothing to fan out it is one query on
    an index, so ``dispatch run`` may call it every few seconds."""
    report = report or PlanReport()
    with db.session_scope(engine) as session:
        pending_ids = session.exec(
            # Under embargo, a FLASH waits for its release like any approval.
            select(Sitrep.id).where(Sitrep.status == SitrepStatus.approved, col(Sitrep.immediate_planned_at).is_(None),
                                    col(Sitrep.approved_at) <= now, col(Sitrep.flash))
        ).all()
    if not pending_ids:
        return report
    last_id = 0
    # Readers with the same preferences want the same FLASHes: worked out once per shape.
    shapes: dict[tuple, tuple[digest.Window, ...]] = {}
    for size in batch_sizes(batch):
        with db.read_scope(engine) as session:  # as in _plan_immediate
            current = views.approved_sitreps(session, ids=pending_ids)  # a SITREP withdrawn meanwhile drops out
            readers = _active_rows(session, after_id=last_id, batch=size) if current else []
        if not current:
            return report
        if not readers:
            _mark_fanned_out(engine, current, now=now)
            report.flashes_fanned_out += len(current)
            return report
        last_id = readers[-1].id
        planned = []
        for row in readers:
            windows = shapes.get((row.regions, row.analysts))
            if windows is None:
                windows = shapes[(row.regions, row.analysts)] = digest.flash_windows(row.recipient(), current)
            planned += [(row.id, window) for window in windows]
        report.deliveries_planned += _write_batch(engine, planned, {}, now=now)
        report.subscribers_checked += len(readers)
