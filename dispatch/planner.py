"""Planning: turn due windows into pending deliveries.

Two kinds of work, both idempotent (the ledger's unique key):
- daily/weekly subscribers whose ``next_due_at`` has passed get their due
  window planned and their cursors (``planned_through``, ``next_due_at``) moved,
  in the same transaction as the inserted deliveries;
- each newly approved SITREP is fanned out once to the immediate subscribers.

Windows are planned ``settle`` after they end, so a SITREP whose approval was
still committing at the window's end is not missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import selectinload
from sqlmodel import col, select

from dispatch import db, digest, ledger, views
from dispatch.models import Cadence, Sitrep, SitrepStatus, Subscriber, SubscriberStatus

SETTLE = timedelta(seconds=60)
BATCH = 500


@dataclass
class PlanReport:
    subscribers_checked: int = 0
    deliveries_planned: int = 0
    sitreps_fanned_out: int = 0


def plan_due(engine: Engine, *, now: datetime, settle: timedelta = SETTLE, batch: int = BATCH) -> PlanReport:
    report = PlanReport()
    _plan_digests(engine, cutoff=now - settle, now=now, batch=batch, report=report)
    _plan_immediate(engine, now=now, batch=batch, report=report)
    return report


def _subscriber_query():
    return select(Subscriber).options(selectinload(Subscriber.regions), selectinload(Subscriber.analysts))


def _plan_digests(engine: Engine, *, cutoff: datetime, now: datetime, batch: int, report: PlanReport) -> None:
    last_id = 0
    while True:
        with db.session_scope(engine) as session:
            due = session.exec(
                _subscriber_query()
                .where(Subscriber.status == SubscriberStatus.active, Subscriber.cadence != Cadence.immediate,
                       or_(col(Subscriber.next_due_at).is_(None), col(Subscriber.next_due_at) <= cutoff),
                       col(Subscriber.id) > last_id)
                .order_by(col(Subscriber.id)).limit(batch)
            ).all()
            if not due:
                return
            last_id = due[-1].id
            names = views.region_names(session)
            recipients = {s.id: views.recipient(s, names) for s in due}
            since = min(digest.planned_from(r) for r in recipients.values())
            sitreps = views.approved_sitreps(session, approved_after=since, approved_until=cutoff)
            planned, cursors = [], []
            for subscriber_id, recipient in recipients.items():
                plan = digest.plan(recipient, sitreps, now=cutoff)
                planned += [(subscriber_id, window) for window in plan.windows]
                cursors.append({"id": subscriber_id, "planned_through": plan.planned_through,
                                "next_due_at": plan.next_due_at})
            session.expunge_all()  # the cursors are written in bulk below, not through these objects
            report.deliveries_planned += ledger.plan_many(session, planned, now=now)
            session.execute(update(Subscriber), cursors)
            report.subscribers_checked += len(due)


def _plan_immediate(engine: Engine, *, now: datetime, batch: int, report: PlanReport) -> None:
    with db.session_scope(engine) as session:
        pending_ids = session.exec(
            select(Sitrep.id).where(Sitrep.status == SitrepStatus.approved,
                                    col(Sitrep.immediate_planned_at).is_(None)).order_by(col(Sitrep.approved_at))
        ).all()
    for sitrep_id in pending_ids:
        last_id = 0
        while True:
            with db.session_scope(engine) as session:
                (sitrep,) = views.approved_sitreps(session, ids=[sitrep_id]) or (None,)
                if sitrep is None:
                    break  # withdrawn meanwhile
                readers = session.exec(
                    _subscriber_query()
                    .where(Subscriber.status == SubscriberStatus.active, Subscriber.cadence == Cadence.immediate,
                           col(Subscriber.id) > last_id)
                    .order_by(col(Subscriber.id)).limit(batch)
                ).all()
                if not readers:
                    session.get(Sitrep, sitrep_id).immediate_planned_at = now
                    report.sitreps_fanned_out += 1
                    break
                last_id = readers[-1].id
                names = views.region_names(session)
                planned = [(s.id, window) for s in readers
                           for window in digest.immediate_windows(views.recipient(s, names), [sitrep])]
                report.deliveries_planned += ledger.plan_many(session, planned, now=now)
                report.subscribers_checked += len(readers)
