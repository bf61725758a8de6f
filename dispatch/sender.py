"""Sending: take claimed deliveries, render each from the current approved
content, hand it to its channel, and record the outcome in the ledger.

Rendering happens here, at send time, so an edit after approval is what
goes out, and a delivery whose SITREPs were all withdrawn is skipped. Readers
whose digests share a body (same SITREPs, format and followed analysts)
share one rendering within a batch; only their personal parts differ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import selectinload
from sqlmodel import col, select

from dispatch import db, digest, ledger, subscribers, views
from dispatch.adapters import Channel
from dispatch.compose import Composer
from dispatch.errors import InputError, PermanentError, TransientError
from dispatch.models import Subscriber, SubscriberKind, SubscriberStatus
from dispatch.retry import RetryPolicy

log = logging.getLogger("dispatch.delivery")
DB_WRITE_TRIES = 6


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    subscriber_id: int
    address: str
    channel: str
    window_key: str
    status: str  # sent | pending (retry later) | failed | skipped | released
    detail: str


class Sender:
    def __init__(self, engine: Engine, *, composer: Composer, channels: dict[str, Channel], policy: RetryPolicy,
                 bounce_limit: int, clock: Callable[[], datetime], stop: threading.Event | None = None):
        self.engine = engine
        self.composer = composer
        self.channels = channels
        self.policy = policy
        self.bounce_limit = bounce_limit
        self.clock = clock
        self.stop = stop or threading.Event()

    def process(self, claimed: list[ledger.Claimed]) -> list[Outcome]:
        with db.session_scope(self.engine) as session:
            rows = session.exec(
                select(Subscriber).where(col(Subscriber.id).in_({c.subscriber_id for c in claimed}))
                .options(selectinload(Subscriber.regions), selectinload(Subscriber.analysts))
            ).all()
            names = views.region_names(session)
            people = {s.id: (s.status, views.recipient(s, names)) for s in rows}
            wanted = {i for c in claimed for i in c.sitrep_ids}
            current = {s.id: s for s in views.approved_sitreps(session, ids=wanted)}
        bodies: dict[tuple, object] = {}
        outcomes = []
        for index, c in enumerate(claimed):
            if self.stop.is_set():
                with db.session_scope(self.engine) as session:
                    ledger.release(session, claimed[index:], now=self.clock())
                outcomes += [self._outcome(r, people, "released", "stopping") for r in claimed[index:]]
                break
            outcomes.append(self._deliver(c, people.get(c.subscriber_id), current, bodies))
        return outcomes

    def _outcome(self, c: ledger.Claimed, people, status: str, detail: str) -> Outcome:
        person = people.get(c.subscriber_id)
        recipient = person[1] if person else None
        outcome = Outcome(delivery_id=c.id, subscriber_id=c.subscriber_id,
                          address=recipient.address if recipient else "?", channel=recipient.kind if recipient else "?",
                          window_key=c.window_key, status=status, detail=detail)
        log.info("delivery=%s subscriber=%s address=%s channel=%s window=%s outcome=%s %s=%s",
                 c.id, c.subscriber_id, outcome.address, outcome.channel, c.window_key, status,
                 "receipt" if status == "sent" else "reason", detail)
        return outcome

    def _finish(self, c: ledger.Claimed, people, *, status: str, detail: str, action) -> Outcome:
        result = self._write(action)
        if result is not None and hasattr(result, "value"):
            status = result.value  # mark_retry decides between pending and failed
        return self._outcome(c, people, status, detail)

    def _deliver(self, c: ledger.Claimed, person, current, bodies) -> Outcome:
        people = {c.subscriber_id: person} if person else {}
        now = self.clock
        skip = _why_skip(person, c, current)
        if skip:
            return self._finish(c, people, status="skipped", detail=skip,
                                action=lambda s: ledger.mark_skipped(s, c, reason=skip, now=now()))
        status, recipient = person
        items = [current[i] for i in c.sitrep_ids if i in current]
        built = digest.build_digest(recipient, c.window_key, items)
        try:
            content = self._render(built, bodies)
            receipt = self.channels[recipient.kind].send(recipient.address, content, delivery_id=c.id,
                                                         progress=c.receipt)
        except TransientError as exc:
            return self._finish(c, people, status="pending", detail=str(exc), action=lambda s: ledger.mark_retry(
                s, c, error=str(exc), now=now(), policy=self.policy, retry_after=exc.retry_after,
                progress=exc.progress))
        except PermanentError as exc:
            return self._finish(c, people, status="failed", detail=str(exc),
                                action=lambda s: self._fail(s, c, recipient, exc))
        except Exception as exc:  # a bug must not lose the delivery: log it, retry later
            log.exception("delivery=%s: unexpected error", c.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
            return self._finish(c, people, status="pending", detail=error, action=lambda s: ledger.mark_retry(
                s, c, error=error, now=now(), policy=self.policy))
        return self._finish(c, people, status="sent", detail=receipt,
                            action=lambda s: ledger.mark_sent(s, c, receipt=receipt, now=now()))

    def _write(self, action):
        """Record an outcome, riding out a database connection that was cut
        (restart, failover): the message is already out, and losing its
        record would send it again after the lease."""
        for attempt in range(DB_WRITE_TRIES):
            try:
                with db.session_scope(self.engine) as session:
                    return action(session)
            except (OperationalError, InterfaceError):
                if attempt == DB_WRITE_TRIES - 1:
                    raise
                log.warning("database connection lost while recording; trying again")
                time.sleep(0.25 * 2 ** attempt)

    def _fail(self, session, c: ledger.Claimed, recipient: digest.Recipient, exc: PermanentError) -> None:
        ledger.mark_failed(session, c, error=str(exc), now=self.clock(), progress=exc.progress)
        if not exc.blames_recipient:
            return
        if recipient.kind == SubscriberKind.email.value:
            subscribers.record_hard_bounce(session, recipient.id, reason=str(exc), limit=self.bounce_limit)
        else:
            subscribers.disable_for(session, recipient.id, reason=str(exc))

    def _render(self, built: digest.Digest, bodies: dict):
        key = built.body_key()
        if built.recipient.kind == SubscriberKind.slack.value:
            if key not in bodies:
                bodies[key] = self.composer.slack(built)
            return bodies[key]
        if key not in bodies:
            bodies[key] = self.composer.email_renderer.shared(built)
        return self.composer.email_renderer.personalise(bodies[key], self.composer.personal(built.recipient))


def _why_skip(person, c: ledger.Claimed, current) -> str | None:
    if person is None:
        return "the subscriber was removed"
    status, recipient = person
    if status != SubscriberStatus.active:
        return f"the subscriber is {status.value}"
    try:
        subscribers.check_address(SubscriberKind(recipient.kind), recipient.address)
    except InputError as exc:
        return f"the address is not valid any more: {exc}"
    if not any(i in current for i in c.sitrep_ids):
        return "every SITREP in it was withdrawn"
    return None
