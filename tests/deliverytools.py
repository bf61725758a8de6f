"""Helpers for the ledger fault tests: a settable clock, readers with one
approved SITREP, and what the ledger and the servers ended up with."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlmodel import select

from dispatch import db, sitreps, subscribers
from dispatch.models import Delivery, DeliveryAttempt, DeliveryStatus, SubscriberKind
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES

APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
LATER = APPROVED + timedelta(hours=1)
LOCAL_WEBHOOK_HOSTS = ("127.0.0.1",)  # the local Slack sink's webhooks
LOOPBACK_NETWORKS = ("127.0.0.1/32",)  # and the opt-in to post to loopback at all (DISPATCH_OUTBOUND_PRIVATE_NETWORKS)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def seed(engine, readers, *, approved_at: datetime | None = APPROVED) -> int:
    """Import and approve the standard SITREP; ``readers`` are addresses
    (email) or (kind, address) pairs, all immediate readers of everything."""
    with db.session_scope(engine) as session:
        sitrep = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed").sitrep
        for reader in readers:
            kind, address = (SubscriberKind.email, reader) if isinstance(reader, str) else reader
            s = subscribers.add_subscriber(session, address, kind=kind, prefs=Preferences(cadence="immediate"),
                                           webhook_hosts=LOCAL_WEBHOOK_HOSTS, private_networks=LOOPBACK_NETWORKS)
            s.created_at = (approved_at or datetime.now(timezone.utc)) - timedelta(days=3)
        sitreps.approve_sitrep(session, sitrep.id, by="chief", at=approved_at)
        return sitrep.id


def rows(engine) -> list[Delivery]:
    with db.session_scope(engine) as session:
        return list(session.exec(select(Delivery).order_by(Delivery.id)).all())


def outcomes(engine) -> list[str]:
    with db.session_scope(engine) as session:
        return [a.outcome for a in session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all()]


def received(handler) -> Counter:
    """How many times each Message-ID reached the SMTP server."""
    return Counter(message_id for _, message_id in handler.received)


def assert_each_sent_once(engine, handler, readers: int) -> None:
    """Every one of ``readers`` deliveries recorded as sent, and each reached
    the SMTP server exactly once (by Message-ID): none lost, none twice."""
    final = rows(engine)
    assert len(final) == readers and {d.status for d in final} == {DeliveryStatus.sent}
    got = received(handler)
    assert set(got) == {d.receipt for d in final}  # none lost
    assert set(got.values()) == {1}  # none twice
