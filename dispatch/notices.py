"""Short messages to one subscriber that are not digests: the double opt-in
confirmation, and the reminder sent when an active address subscribes again.

They are deliveries like any other: the web request only plans one into
the ledger (``ledger.plan_notice``) and answers at once; a ``NoticeSender``
claims, sends, retries with backoff and records them, in a thread of the
web process (and of ``dispatch run --web``). A slow or dead relay therefore
never holds a request, and every notice leaves a row in the delivery log.

Claims are leased, renewed and recorded as digests are (dispatch.claim_loop).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from jinja2 import Environment
from sqlalchemy.engine import Engine

from dispatch import claim_loop, db, leases, ledger, links, metrics
from dispatch.adapters.smtp import SmtpAdapter
from dispatch.errors import PermanentError, TransientError
from dispatch.models import Subscriber, SubscriberStatus, utcnow
from dispatch.render import EmailContent
from dispatch.retry import RetryPolicy

log = logging.getLogger("dispatch.notices")
BRAND = "Dispatch Briefing"  # the default of the brand setting (DISPATCH_BRAND)
# However many clients ask, an address gets at most this many notices a day.
NOTICES_PER_ADDRESS_PER_DAY = 3
POLL_SECONDS = 5.0  # a notice planned by another process is picked up within this
BATCH = 20
# Whom a notice of each kind is still worth sending to when its turn comes.
SEND_WHEN = {"confirm": (SubscriberStatus.pending, SubscriberStatus.unsubscribed),
             "remind": (SubscriberStatus.active,)}


@dataclass(frozen=True)
class Notice:
    address: str
    content: EmailContent


def compose(environment: Environment, *, kind: str, brand: str, public_url: str, secret: str,
            subscriber_id: int, address: str, postal_address: str | None = None) -> Notice:
    """``kind`` is "confirm" or "remind"."""
    urls = links.subscriber_links(public_url, secret, subscriber_id=subscriber_id, address=address)
    confirm_url = links.link_url(public_url, secret, subscriber_id=subscriber_id, address=address, purpose="confirm")
    text = environment.get_template("email/notice.txt.j2").render(
        kind=kind, brand=brand, address=address, confirm_url=confirm_url, postal_address=postal_address,
        preferences_url=urls.preferences_url, unsubscribe_url=urls.unsubscribe_url,
        valid_days=links.MAX_AGE["confirm"].days)
    subject = f"Confirm your subscription to {brand}" if kind == "confirm" else f"You are subscribed to {brand}"
    return Notice(address, EmailContent(subject=subject, text=text, html=None,
                                        preferences_url=urls.preferences_url, unsubscribe_url=urls.unsubscribe_url))


def may_send(sent_today: int) -> bool:
    """The daily cap per address: a pure decision, counted from the ledger so
    that it holds across clients, processes and restarts."""
    return sent_today < NOTICES_PER_ADDRESS_PER_DAY


def plan(engine: Engine, subscriber_id: int, *, kind: str, now: datetime) -> int | None:
    """Queue a notice unless the address had its share today. Returns the
    delivery id, or None when capped (the caller answers the same either way)."""
    with db.session_scope(engine) as session:
        if not may_send(ledger.notices_since(session, subscriber_id, since=now - timedelta(days=1))):
            log.info("subscriber=%s: %s notice not sent, daily cap of %s reached",
                     subscriber_id, kind, NOTICES_PER_ADDRESS_PER_DAY)
            return None
        return ledger.plan_notice(session, subscriber_id, kind=kind, now=now)


class NoticeSender:
    """Claims due notices from the ledger, sends each through the SMTP
    adapter and records the outcome, as the digest sender does for digests."""

    def __init__(self, engine: Engine, *, environment: Environment, brand: str, public_url: str, secret: str,
                 mailer: SmtpAdapter, policy: RetryPolicy, clock: Callable[[], datetime] = utcnow,
                 postal_address: str | None = None, bounce_address: str | None = None,
                 lease: timedelta = ledger.DEFAULT_LEASE):
        self.engine = engine
        self.environment = environment
        self.brand = brand
        self.postal_address = postal_address
        self.public_url = public_url
        self.secret = secret
        self.mailer = mailer
        self.policy = policy
        self.clock = clock
        self.bounce_address = bounce_address  # VERP, as for digests
        self.lease = lease
        self.loop = claim_loop.ClaimLoop(
            engine, claim=lambda session, now, limit, lease: ledger.claim(session, now=now, limit=limit, lease=lease,
                                                                          notices=True),
            send=self._send, report=self._report, lease=lease, clock=clock, batch=BATCH)

    def drain(self, *, stop: threading.Event | None = None, keeper: leases.LeaseKeeper | None = None) -> int:
        """Send every due notice; returns how many were handled (dispatch.claim_loop)."""
        return self.loop.drain(stop=stop, keeper=keeper)

    @staticmethod
    def _report(c: ledger.Claimed, finish: ledger.Finish, state: str) -> None:
        metrics.SENDS.labels(kind="notice", channel="email", outcome=finish.status.value).inc()
        log.info("delivery=%s subscriber=%s notice=%s outcome=%s %s", c.id, c.subscriber_id,
                 ledger.notice_kind(c.window_key), state, finish.detail,
                 extra={"fields": {"delivery": c.id, "subscriber": c.subscriber_id, "channel": "email",
                                   "notice": ledger.notice_kind(c.window_key), "window": c.window_key,
                                   "attempt": c.attempts, "outcome": state, "detail": finish.detail}})

    def _send(self, c: ledger.Claimed) -> ledger.Finish:
        kind = ledger.notice_kind(c.window_key)
        with db.session_scope(self.engine) as session:
            row = session.get(Subscriber, c.subscriber_id)
            reader = (row.id, row.address, row.status) if row is not None else None
        if reader is None:
            return ledger.skipped(c, reason="the subscriber was removed", now=self.clock())
        subscriber_id, address, status = reader
        if status not in SEND_WHEN.get(kind, ()):
            return ledger.skipped(c, reason=f"the subscriber is {status.value} now", now=self.clock())
        notice = compose(self.environment, kind=kind, brand=self.brand, public_url=self.public_url,
                         secret=self.secret, subscriber_id=subscriber_id, address=address,
                         postal_address=self.postal_address)
        try:
            content = dataclasses.replace(notice.content, envelope_from=links.return_path(
                self.bounce_address, self.secret, delivery_id=c.id))
            receipt = self.mailer.send(notice.address, content, delivery_id=c.id)
        except TransientError as exc:
            return ledger.retry(c, error=str(exc), now=self.clock(), policy=self.policy,
                                retry_after=exc.retry_after)
        except PermanentError as exc:
            return ledger.failed(c, error=str(exc), now=self.clock())
        except Exception as exc:  # a bug must not strand the row in `sending`: log it, retry later
            log.exception("delivery=%s: unexpected error sending a notice", c.id)
            return ledger.retry(c, error=f"internal error: {type(exc).__name__}", now=self.clock(),
                                policy=self.policy)
        return ledger.sent(c, receipt=receipt, now=self.clock())


class NoticeWorker:
    """A ``NoticeSender`` in a thread of its own: woken at once by ``wake()``
    (a request just planned a notice), else every ``POLL_SECONDS``."""

    def __init__(self, sender: NoticeSender, *, poll: float = POLL_SECONDS):
        self.sender = sender
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notices", daemon=True)

    def start(self) -> NoticeWorker:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.sender.drain(stop=self._stop)
            except Exception:  # the database went away for a moment: try again at the next tick
                log.exception("sending notices failed; will try again")
            self._wake.wait(self.poll)
