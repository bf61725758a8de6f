"""A verified provider request → stored events, through the same
``events.record`` as a DSN or an ARF report read by ``dispatch inbound``.

Which reader an event is about:
1. our Message-ID as the provider echoes it (``inbox.delivery_in_message_id``:
   its keyed tag names one delivery) *and* the event's recipient is that
   delivery's reader: Message-IDs are not secret, so the address must agree,
   as for a bounce by mail;
2. else, for a hard bounce the provider says is for a mailbox that does not
   exist (``ProviderEvent.address_invalid``), the email reader with that
   address. That is a fact about the address, whatever message found it out,
   and the request is verified as the provider's own. Soft bounces and
   complaints are never attributed by address alone: on an account that
   other senders share, they may be about someone else's mail.
Anything else is not written (counted as unattributable).

The whole request is one transaction: its nonce first (the same request
again stops there and changes nothing), then each event; an error rolls
all of it back, and the provider's retry finds nothing half done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from dispatch import db, subscribers
from dispatch.inbound import events, inbox
from dispatch.inbound.outcomes import Kind
from dispatch.inbound.providers.reading import ProviderEvent, Verified
from dispatch.models import Delivery, Subscriber, SubscriberKind, WebhookNonce, address_key


@dataclass(frozen=True)
class Outcome:
    replayed: bool = False
    recorded: int = 0
    duplicates: int = 0
    unattributable: int = 0
    ignored: int = 0

    def as_dict(self) -> dict:
        return {"replayed": self.replayed, "recorded": self.recorded, "duplicates": self.duplicates,
                "unattributable": self.unattributable, "ignored": self.ignored}


def store(engine: Engine, verified: Verified, *, installation: str, soft_limit: float, now: datetime) -> Outcome:
    with db.session_scope(engine) as session:
        if verified.nonce is not None and not _first_use(session, verified, now=now):
            return Outcome(replayed=True)
        recorded = duplicates = unattributable = 0
        for event in verified.events:
            report = attribute(session, event, source=verified.source, installation=installation)
            if report is None:
                unattributable += 1
                continue
            try:
                done = events.record(session, report, now=now, soft_limit=soft_limit)
            except events.Unattributable:
                unattributable += 1
                continue
            if done.duplicate:
                duplicates += 1
            else:
                recorded += 1
        return Outcome(False, recorded, duplicates, unattributable, verified.ignored)


def seen(engine: Engine, source: str, nonce: str) -> bool:
    with db.session_scope(engine) as session:
        return session.exec(select(WebhookNonce.id).where(WebhookNonce.source == source,
                                                          WebhookNonce.nonce == nonce)).first() is not None


def _first_use(session: Session, verified: Verified, *, now: datetime) -> bool:
    # Nonces past their window would be refused as stale anyway: the table stays small.
    session.execute(sa.delete(WebhookNonce).where(col(WebhookNonce.expires_at) < now))
    try:
        with session.begin_nested():
            session.add(WebhookNonce(source=verified.source, nonce=verified.nonce[:200],
                                     expires_at=verified.expires_at or now))
            session.flush()
    except IntegrityError:
        return False
    return True


def attribute(session: Session, event: ProviderEvent, *, source: str, installation: str) -> events.Report | None:
    common = dict(status=event.status, diagnostic=event.diagnostic, event_key=event.event_key)
    if event.message_id and event.recipient:
        delivery_id = inbox.delivery_in_message_id(event.message_id, installation)
        delivery = session.get(Delivery, delivery_id) if delivery_id is not None else None
        reader = session.get(Subscriber, delivery.subscriber_id) if delivery and delivery.subscriber_id else None
        if reader is not None and reader.kind == SubscriberKind.email and \
                address_key(SubscriberKind.email, reader.address) == address_key(SubscriberKind.email,
                                                                                 event.recipient):
            return events.Report(event.kind, source, delivery_id=delivery_id, **common)
    if event.kind == Kind.hard_bounce and event.address_invalid and event.recipient:
        reader = subscribers.find_by_address(session, event.recipient, kind=SubscriberKind.email)
        if reader is not None:
            return events.Report(event.kind, source, subscriber_id=reader.id, **common)
    return None
