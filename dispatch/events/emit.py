"""Writing events: ``emit`` (any code that has something to tell), and the
hooks that emit the status changes of SITREPs and subscribers, wherever in
the code they happen.

An event is written in the same transaction as the change it reports (an
outbox), with one pending delivery per event webhook that asked for its type
(``ledger.plan_event``); the event sender (sender.py) posts them later. So
an event is never told of a change that was rolled back, never lost when
the receiver is down, and costs the request that made it only two inserts.
When no webhook wants a type, nothing is written.

Status changes are caught on the ORM session, after each flush: a new
subscriber (``subscriber.created``), a subscriber whose status became
unsubscribed or bounced, a SITREP whose status became approved or withdrawn.
Their events are added after the flush and written by the commit's next
flush. Bulk UPDATE statements bypass these hooks: code that changes those
statuses in bulk calls ``emit`` itself.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from dispatch import ledger
from dispatch.events.catalogue import TYPES
from dispatch.models import (Event, EventWebhook, Sitrep, SitrepStatus, Subscriber, SubscriberStatus,
                             utcnow)

PENDING_KEY = "dispatch_events"  # session.info: events seen in a flush, written after it


def new_id() -> str:
    """``evt_`` and 32 hex digits: the time in milliseconds first, then 80
    random bits (as a UUIDv7 orders them), so a bulk of new events lands at
    the end of the id indexes instead of all over them."""
    return f"evt_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def emit(session: Session, type: str, data: dict, *, now: datetime | None = None) -> str | None:
    """Record one event and plan it for every webhook that wants it; its id,
    or None when no webhook does."""
    ids = emit_many(session, [(type, data)], now=now)
    return ids[0] if ids else None


_HOOKS = sa.select(EventWebhook.__table__.c.id, EventWebhook.__table__.c.events)


def _hooks(session: Session) -> list:
    """Every event webhook: (id, the event types it wants). A Core select on
    the session's connection (a fifth of the ORM select's cost): it runs
    with every run of recorded outcomes."""
    with session.no_autoflush:
        return webhooks(session.connection())


def webhooks(connection: sa.Connection) -> list:
    """``_hooks`` on a Core connection (a sender records its outcomes without a session)."""
    return connection.execute(_HOOKS).all()


def emit_many(session: Session, events: Iterable[tuple[str, dict]], *, now: datetime | None = None,
              hooks: list | None = None) -> list[str]:
    events = list(events)
    if not events:
        return []
    for type, _ in events:
        if type not in TYPES:
            raise ValueError(f"unknown event type {type!r}")
    now = now or utcnow()
    if hooks is None:
        hooks = _hooks(session)
    written = []
    for type, data in events:
        wanted = [hook_id for hook_id, types in hooks if type in (types or ())]
        if not wanted:
            continue
        event_id = new_id()
        session.add(Event(id=event_id, type=type, created_at=now,
                          payload={"id": event_id, "type": type, "timestamp": now.isoformat(), "data": data}))
        for hook_id in wanted:
            ledger.plan_event(session, hook_id, event_id=event_id, now=now)
        written.append(event_id)
    return written


def emit_bulk(session: Session, type: str, datas: Iterable[dict], *, now: datetime | None = None) -> int:
    """One event of ``type`` per ``datas`` item, for a bulk change the ORM
    never sees (a CSV import's Core inserts): written and planned with one
    statement each, nothing at all when no webhook wants ``type``. Returns
    how many events were written."""
    if type not in TYPES:
        raise ValueError(f"unknown event type {type!r}")
    with session.no_autoflush:
        wanted = [hook_id for hook_id, types in session.execute(select(EventWebhook.id, EventWebhook.events)).all()
                  if type in (types or ())]
    if not wanted:
        return 0
    now = now or utcnow()
    rows = []
    for data in datas:
        event_id = new_id()
        rows.append({"id": event_id, "type": type, "created_at": now,
                     "payload": {"id": event_id, "type": type, "timestamp": now.isoformat(), "data": data}})
    if not rows:
        return 0
    session.execute(sa.insert(Event.__table__), rows)
    ledger.plan_events(session, [(hook_id, row["id"]) for row in rows for hook_id in wanted], now=now)
    return len(rows)


def deliveries_finished(session: Session, finishes: Iterable[ledger.Finish]) -> list[str]:
    """delivery.sent / delivery.failed for the digests a sender just recorded.
    Their payloads are made only for the types some webhook wants: a run of
    outcomes is recorded every 20 messages, and most installations want none."""
    hooks = _hooks(session)
    return emit_many(session, delivery_events(finishes, hooks), hooks=hooks)


def delivery_events(finishes: Iterable[ledger.Finish], hooks: list) -> list[tuple[str, dict]]:
    """The delivery.sent / delivery.failed events of these finishes that
    some webhook of ``hooks`` wants (none when no webhook wants either)."""
    wanted = {t for _, types in hooks for t in (types or ())}
    events = []
    for f in finishes:
        if f.status.value not in ("sent", "failed") or f"delivery.{f.status.value}" not in wanted:
            continue
        c = f.claimed
        events.append((f"delivery.{f.status.value}", {
            "delivery_id": c.id, "subscriber_id": c.subscriber_id, "window_key": c.window_key,
            "sitrep_ids": list(c.sitrep_ids), "attempt": c.attempts, "at": f.at.isoformat(),
            ("receipt" if f.status.value == "sent" else "error"): f.receipt if f.status.value == "sent"
            else f.last_error}))
    return events


# --- status changes, from the ORM session -------------------------------------------

SUBSCRIBER_EVENTS = {SubscriberStatus.unsubscribed: "subscriber.unsubscribed",
                     SubscriberStatus.bounced: "subscriber.bounced"}
SITREP_EVENTS = {SitrepStatus.approved: "sitrep.approved", SitrepStatus.withdrawn: "sitrep.withdrawn"}


def _became(obj, attribute: str):
    added = sa.inspect(obj).attrs[attribute].history.added
    return added[0] if added else None


def _subscriber_data(s: Subscriber) -> dict:
    return {"subscriber_id": s.id, "kind": getattr(s.kind, "value", s.kind), "address": s.address,
            "status": getattr(s.status, "value", s.status)}


def _sitrep_data(s: Sitrep) -> dict:
    return {"sitrep_id": s.id, "title": s.title, "status": getattr(s.status, "value", s.status),
            "approved_at": s.approved_at.isoformat() if s.approved_at else None, "approved_by": s.approved_by,
            "flash": bool(s.flash)}


def _embargoed(s: Sitrep) -> bool:
    """Approved for an instant still to come: its sitrep.approved waits for
    the release, or a receiver would publish what is under embargo."""
    return s.approved_at is not None and _aware(s.approved_at) > utcnow()


def _released(s: Sitrep) -> bool:
    """An embargoed SITREP comes out: released early (its approval time moved
    to now), or its instant came and the planner fanned it out (an approval
    time later than the approval itself, which set updated_at)."""
    if s.status != SitrepStatus.approved or s.approved_at is None:
        return False
    if _became(s, "approved_at") is not None:
        return not _embargoed(s)
    # The planner's clock (run --once --now) decides, not this one: it fans
    # out only what is released by its own now.
    return (_became(s, "immediate_planned_at") is not None and s.updated_at is not None
            and _aware(s.approved_at) > _aware(s.updated_at))


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


@sa.event.listens_for(OrmSession, "after_flush")
def _seen(session, _context) -> None:
    """Ids are assigned and the changes' history still readable: note the events."""
    found = []
    for obj in session.new:
        if isinstance(obj, Subscriber):
            found.append(("subscriber.created", _subscriber_data(obj)))
        elif isinstance(obj, Sitrep) and obj.status in SITREP_EVENTS and not _embargoed(obj):
            found.append((SITREP_EVENTS[obj.status], _sitrep_data(obj)))
    for obj in session.dirty:
        if isinstance(obj, Subscriber):
            became = _became(obj, "status")
            if became in SUBSCRIBER_EVENTS:
                found.append((SUBSCRIBER_EVENTS[became], _subscriber_data(obj)))
        elif isinstance(obj, Sitrep):
            became = _became(obj, "status")
            if became in SITREP_EVENTS and not (became == SitrepStatus.approved and _embargoed(obj)):
                found.append((SITREP_EVENTS[became], _sitrep_data(obj)))
            elif became is None and _released(obj):
                found.append(("sitrep.approved", _sitrep_data(obj)))
    if found:
        session.info.setdefault(PENDING_KEY, []).extend(found)


@sa.event.listens_for(OrmSession, "after_flush_postexec")
def _write(session, _context) -> None:
    """Written by the next flush (a commit flushes until nothing is left)."""
    found = session.info.pop(PENDING_KEY, None)
    if found:
        emit_many(session, found)


@sa.event.listens_for(OrmSession, "after_rollback")
def _forget(session) -> None:
    session.info.pop(PENDING_KEY, None)
