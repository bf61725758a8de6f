"""Acting on what came back: one attributed report → one stored event and
the reader's new status, decided by ``outcomes`` and carried out through
the subscriber functions (so the status history records it).

A report that names no delivery or reader we know is refused before
anything is written (``Unattributable``). A report seen before (the same
provider event id, or the same message) changes nothing the second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from dispatch import fields, metrics, paging, signup, subscribers
from dispatch.errors import InputError
from dispatch.inbound import outcomes
from dispatch.inbound.outcomes import Kind
from dispatch.models import Delivery, DeliveryEvent, Subscriber

log = logging.getLogger("dispatch.inbound")
SOURCES = ("smtp", "lmtp", "stdin", "ses", "sendgrid", "mailgun", "postmark")


class Unattributable(InputError):
    """The input names no delivery or reader of ours: refused, nothing written."""


@dataclass(frozen=True)
class Report:
    """One bounce, complaint or unsubscribe, as the parsers and webhooks read it."""

    kind: Kind
    source: str
    delivery_id: int | None = None
    subscriber_id: int | None = None
    status: str | None = None  # RFC 3463, 5.1.1
    diagnostic: str = ""
    event_key: str | None = None  # the provider's event id, or the report's Message-ID


@dataclass(frozen=True)
class Recorded:
    event_id: int | None
    subscriber_id: int
    delivery_id: int | None
    kind: Kind
    effect: str
    duplicate: bool = False


def record(session: Session, report: Report, *, now: datetime, soft_limit: float) -> Recorded:
    if report.source not in SOURCES:
        raise ValueError(f"unknown source {report.source!r}")
    subscriber_id = report.subscriber_id
    if report.delivery_id is not None:
        delivery = session.get(Delivery, report.delivery_id)
        if delivery is None:
            raise Unattributable(f"delivery {report.delivery_id} is not in the log")
        if subscriber_id is not None and subscriber_id != delivery.subscriber_id:
            raise Unattributable("the report names a delivery of another reader")
        subscriber_id = delivery.subscriber_id
    subscriber = session.get(Subscriber, subscriber_id) if subscriber_id is not None else None
    if subscriber is None:
        raise Unattributable("the report names no reader of ours")
    key = fields.clip_line(report.event_key, 200) if report.event_key else None
    if key is not None:
        seen = session.exec(select(DeliveryEvent.id).where(
            DeliveryEvent.source == report.source, DeliveryEvent.event_key == key)).first()
        if seen is not None:
            return Recorded(seen, subscriber.id, report.delivery_id, report.kind, "seen before", duplicate=True)
    status = outcomes.valid_status(report.status)
    diagnostic = fields.clip_line(report.diagnostic or "", 500)
    decision = outcomes.decide(report.kind, status=status, diagnostic=diagnostic,
                               score=subscriber.soft_bounce_score or 0.0, scored_at=subscriber.soft_bounce_at,
                               now=now, limit=soft_limit)
    event = DeliveryEvent(delivery_id=report.delivery_id, subscriber_id=subscriber.id, kind=report.kind.value,
                          status_code=status, diagnostic=diagnostic, source=report.source, event_key=key,
                          effect=fields.clip_line(decision.reason, 200), received_at=now)
    try:
        with session.begin_nested():  # the event first: a replay racing this one stops here
            session.add(event)
            session.flush()
    except IntegrityError:
        return Recorded(None, subscriber.id, report.delivery_id, report.kind, "seen before", duplicate=True)
    _apply(session, subscriber, decision, now=now)
    session.flush()
    return Recorded(event.id, subscriber.id, report.delivery_id, report.kind, decision.reason)


def _apply(session: Session, subscriber: Subscriber, decision: outcomes.Decision, *, now: datetime) -> None:
    if decision.scored:
        subscriber.soft_bounce_score, subscriber.soft_bounce_at = decision.score, now
    if decision.mark == "bounced":
        subscribers.mark_bounced(session, subscriber.id, reason=decision.reason)
        metrics.BOUNCES.inc()
    elif decision.kind == Kind.complaint:
        signup.complained(session, subscriber)
        metrics.COMPLAINTS.inc()
    elif decision.kind == Kind.unsubscribe:
        signup.unsubscribe(session, subscriber, how="by mail")


# --- reading them back ------------------------------------------------------------

def for_delivery(session: Session, delivery_id: int) -> list[DeliveryEvent]:
    return list(session.exec(select(DeliveryEvent).where(DeliveryEvent.delivery_id == delivery_id)
                             .order_by(col(DeliveryEvent.id))).all())


def for_subscriber(session: Session, subscriber_id: int, *, limit: int = 50) -> list[DeliveryEvent]:
    return list(session.exec(select(DeliveryEvent).where(DeliveryEvent.subscriber_id == subscriber_id)
                             .order_by(col(DeliveryEvent.id).desc()).limit(limit)).all())


def page(session: Session, *, limit: int = 50, after: int | None = None, before: int | None = None,
         kind: str | None = None) -> paging.Page[DeliveryEvent]:
    """Newest first, keyset paged (dispatch.paging)."""
    query = select(DeliveryEvent)
    if kind:
        query = query.where(DeliveryEvent.kind == kind)
    return paging.fetch(query, col(DeliveryEvent.id), lambda q: session.exec(q).all(), row_id=lambda e: e.id,
                        limit=limit, after=after, before=before, descending=True)


def counts_per_day(session: Session, *, since: datetime, until: datetime) -> dict[date, dict[str, int]]:
    """Events per UTC day and kind in [since, until): read from the received_at index."""
    rows = session.exec(select(DeliveryEvent.received_at, DeliveryEvent.kind).where(
        col(DeliveryEvent.received_at) >= since, col(DeliveryEvent.received_at) < until)).all()
    counts: dict[date, dict[str, int]] = {}
    for at, kind in rows:
        day = counts.setdefault(at.date(), {})
        day[kind] = day.get(kind, 0) + 1
    return counts


KINDS = tuple(k.value for k in Kind if k != Kind.ignored)  # what is stored, in the order pages show it


def as_dict(event: DeliveryEvent) -> dict:
    return {"id": event.id, "delivery_id": event.delivery_id, "subscriber_id": event.subscriber_id,
            "kind": event.kind, "status_code": event.status_code, "diagnostic": event.diagnostic,
            "source": event.source, "effect": event.effect, "received_at": event.received_at.isoformat()}
