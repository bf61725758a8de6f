"""Sending correction and retraction notices: claim them from the ledger
(window keys ``correction:…`` and ``retraction:…``), render and send each,
record the outcome, as the other senders do.

To an email reader: a short email. To a Slack channel reached with the
bot token: each post that carried the SITREP is updated in place
(``chat.update`` on the channel and ts its receipt recorded) with a
"Corrected" or "Retracted" line, and a threaded reply carries the note.
To a webhook, or where no post can be found or updated: a new post.
The update is the same whenever it is repeated, and the reply comes last,
so a retry after a failure posts no reply twice.

Claims are leased, renewed and recorded as digests are (dispatch.claim_loop):
a slow relay must not hand the rest to another ``dispatch run``, which
would send them too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from dispatch import claim_loop, db, leases, ledger, metrics, revisions, views
from dispatch.compose import Composer
from dispatch.desk import corrections
from dispatch.errors import NotFoundError, PermanentError, TransientError
from dispatch.models import (
    Delivery, DeliverySitrep, DeliveryStatus, Sitrep, SitrepStatus, SubscriberKind, SubscriberStatus, utcnow,
)
from dispatch.render_revision import Notice, RevisionRenderer
from dispatch.retry import RetryPolicy

log = logging.getLogger("dispatch.revisions")
BATCH = 20
WAIT_FOR_SEND = timedelta(minutes=1)  # a notice whose reader's digest is being sent looks again after this
_WAIT = object()


class RevisionNoticeSender:
    def __init__(self, engine: Engine, *, composer: Composer, channels: dict, policy: RetryPolicy,
                 clock: Callable[[], datetime] = utcnow, brand: str = "", postal_address: str | None = None,
                 lease: timedelta = ledger.DEFAULT_LEASE):
        self.engine = engine
        self.composer = composer
        self.channels = channels
        self.policy = policy
        self.clock = clock
        self.lease = lease
        self.renderer = RevisionRenderer(environment=composer.email_renderer.env, brand=brand,
                                         postal_address=postal_address, slack=composer.slack_renderer)
        self.loop = claim_loop.ClaimLoop(
            engine, claim=lambda session, now, limit, lease: ledger.claim(session, now=now, limit=limit, lease=lease,
                                                                          revisions=True),
            send=self._send, report=self._report, lease=lease, clock=clock, batch=BATCH)

    def drain(self, *, stop: threading.Event | None = None, keeper: leases.LeaseKeeper | None = None) -> int:
        """Send every due notice; returns how many were handled (dispatch.claim_loop)."""
        return self.loop.drain(stop=stop, keeper=keeper)

    @staticmethod
    def _report(c: ledger.Claimed, finish: ledger.Finish, state: str) -> None:
        metrics.SENDS.labels(kind="revision", channel="any", outcome=finish.status.value).inc()
        log.info("delivery=%s subscriber=%s window=%s outcome=%s %s", c.id, c.subscriber_id,
                 c.window_key, state, finish.detail,
                 extra={"fields": {"delivery": c.id, "subscriber": c.subscriber_id,
                                   "window": c.window_key, "attempt": c.attempts, "outcome": state,
                                   "detail": finish.detail}})

    def _load(self, c: ledger.Claimed):
        """The reader, what the notice says, the posts that carried the SITREP
        (Slack), and the SITREPs as they now stand; or a reason to skip."""
        parsed = corrections.parse_key(c.window_key)
        if parsed is None:
            return "not a revision notice"
        kind, sitrep_id, number = parsed
        with db.session_scope(self.engine) as session:
            person = views.readers(session, [c.subscriber_id]).get(c.subscriber_id)
            if person is None:
                return "the subscriber was removed"
            status, recipient = person
            if status != SubscriberStatus.active:
                return f"the subscriber is {status.value}"
            try:
                revision = revisions.get_revision(session, sitrep_id, number)
            except NotFoundError:
                return f"revision {number} of SITREP {sitrep_id} is gone"
            sitrep = session.get(Sitrep, sitrep_id)
            if sitrep is None:
                return "the SITREP was removed"
            reached = self._reached(session, c.subscriber_id, sitrep_id)
            if reached is None:
                return _WAIT
            if not reached:
                return "the reader never received the SITREP"
            if kind == "correction" and sitrep.status != SitrepStatus.approved:
                return f"the SITREP is {sitrep.status.value} now"  # a retraction's own notice tells them
            content = revision.after if kind == "correction" else revision.before
            content = content or revisions.snapshot(sitrep)
            notice = Notice(kind=kind, sitrep_id=sitrep_id, number=number, title=content["title"],
                            event_date=sitrep.event_date if kind == "correction" else
                            _date(content.get("event_date"), sitrep.event_date),
                            note=revision.note, changes=tuple(revisions.changes_of(revision)),
                            at=revision.approved_at or self.clock(), url=self.composer.archive.sitrep(sitrep_id))
            posts: list[corrections.SlackPost] = []
            carried_ids: set[int] = set()
            if recipient.kind == SubscriberKind.slack.value:
                for receipt, delivered in self._receipts(session, c.subscriber_id, sitrep_id):
                    post = corrections.slack_post(receipt, sitrep_id, delivered=tuple(delivered))
                    if post is not None and post not in posts:
                        posts.append(post)
                        carried_ids |= set(post.carried or ())
            current = {s.id: s for s in views.approved_sitreps(session, ids=carried_ids)} if carried_ids else {}
        return recipient, notice, posts, current

    @staticmethod
    def _reached(session, subscriber_id: int, sitrep_id: int) -> bool | None:
        """Did a delivery carrying the SITREP reach this reader: True (sent, or
        held: its message went out), False (none did), None (one is still
        being sent, and was counted when the notice was planned: wait for it)."""
        rows = session.execute(reaching(subscriber_id, sitrep_id)).all()
        waiting = False
        for status, lease_until, key in rows:
            if corrections.is_notice_key(key) or key.startswith(ledger.NOTICE_PREFIX):
                continue
            if status == DeliveryStatus.sent or (lease_until is not None and
                                                 _aware(lease_until) >= ledger.HELD_UNTIL):
                return True
            waiting = True
        return None if waiting else False

    @staticmethod
    def _receipts(session, subscriber_id: int, sitrep_id: int):
        rows = session.execute(
            select(Delivery.receipt, Delivery.sitrep_ids, Delivery.window_key)
            .where(Delivery.subscriber_id == subscriber_id, _carries(sitrep_id),
                   Delivery.status == DeliveryStatus.sent).order_by(Delivery.id)).all()
        return [(receipt, ids) for receipt, ids, key in rows if not corrections.is_notice_key(key)]

    def _send(self, c: ledger.Claimed) -> ledger.Finish:
        now = self.clock
        try:
            loaded = self._load(c)
            if loaded is _WAIT:  # not an attempt: the reader's digest is still out
                return ledger.paused(c, reason="a delivery carrying the SITREP to this reader is still being sent",
                                     until=now() + WAIT_FOR_SEND, now=now())
            if isinstance(loaded, str):
                return ledger.skipped(c, reason=loaded, now=now())
            recipient, notice, posts, current = loaded
            if recipient.kind == SubscriberKind.email.value:
                receipt = self._email(c, recipient, notice)
            else:
                receipt = self._slack(recipient, notice, posts, current)
        except TransientError as exc:  # a refused bot token too: retried with backoff until it works again
            return ledger.retry(c, error=str(exc), now=now(), policy=self.policy, retry_after=exc.retry_after)
        except PermanentError as exc:
            return ledger.failed(c, error=str(exc), now=now())
        except Exception as exc:  # a bug must not strand the row in `sending`: log it, retry later
            log.exception("delivery=%s: unexpected error sending a revision notice", c.id)
            return ledger.retry(c, error=f"internal error: {type(exc).__name__}", now=now(), policy=self.policy)
        return ledger.sent(c, receipt=receipt, now=now())

    def _email(self, c: ledger.Claimed, recipient, notice: Notice) -> str:
        personal = self.composer.personal(recipient, delivery_id=c.id)
        content = self.renderer.email(notice, recipient, personal)
        content = dataclasses.replace(content, envelope_from=self.composer.return_path(c.id))
        return self.channels["email"].send(recipient.address, content, delivery_id=c.id)

    def _slack(self, recipient, notice: Notice, posts: list[corrections.SlackPost], current: dict) -> str:
        slack = self.channels["slack"]
        note = self.renderer.note_message(notice)
        updated: list[str] = []
        for post in posts:
            if post.carried is None:
                continue  # what that message showed is not known: the reply says it all
            carried = [current[i] for i in post.carried if i in current]
            try:
                updated.append(slack.update(post.channel, post.ts, self.renderer.updated_post(notice, recipient,
                                                                                             carried)))
            except PermanentError as exc:  # deleted, or too old to edit: the reply still tells them
                log.info("chat.update of %s in %s refused (%s); replying only", post.ts, post.channel, exc)
        if posts:
            first = posts[0]
            try:
                reply = slack.reply(first.channel, first.ts, note)
                return json.dumps({"channel": first.channel, "updated": updated, "thread_ts": first.ts,
                                   "ts": [reply]})
            except PermanentError as exc:
                if exc.blames_recipient:
                    raise
                log.info("threaded reply in %s refused (%s); posting it instead", first.channel, exc)
        posted = slack.post(recipient.address, note)
        channel = "webhook" if posted == "webhook:ok" else recipient.address
        return json.dumps({"channel": channel, "updated": updated, "ts": [posted]})


def reaching(subscriber_id: int, sitrep_id: int):
    """The reader's deliveries carrying the SITREP that were sent or are being sent."""
    return select(Delivery.status, Delivery.lease_until, Delivery.window_key).where(
        Delivery.subscriber_id == subscriber_id, _carries(sitrep_id),
        col(Delivery.status).in_([DeliveryStatus.sent, DeliveryStatus.sending]))


def _carries(sitrep_id: int):
    """The delivery carries the SITREP: probed per delivery of one reader (the
    link table's key), never by walking every link of the SITREP, which is a
    row per reader: a join let SQLite do that for each notice, quadratic in readers."""
    links = DeliverySitrep.__table__
    return sa.exists().where(links.c.sitrep_id == sitrep_id, links.c.delivery_id == Delivery.id)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite hands back naive UTC


def _date(value, fallback: date) -> date:
    """The event date a retracted SITREP had, from its snapshot (else as stored)."""
    try:
        return date.fromisoformat(value) if isinstance(value, str) else fallback
    except ValueError:
        return fallback
