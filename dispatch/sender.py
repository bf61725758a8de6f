"""Sending: take claimed deliveries, render each from the current approved
content, hand it to its channel, and record the outcome in the ledger.

Rendering happens here, at send time, so an edit after approval is what
goes out, and a delivery whose SITREPs were all withdrawn is skipped. Readers
whose digests share a body (same SITREPs, format and followed analysts)
share one rendering within a batch; only their personal parts differ.

While a batch is worked through, a LeaseKeeper (dispatch/leases.py) renews
its leases, and a row it found taken over is not sent from here. Outcomes
are written by ``recording.Recorder``, which retries and, failing that,
holds rows rather than let them be sent again. A refused installation
credential pauses the deliveries that use it (dispatch/pauses.py).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from dispatch import db, digest, ledger, leases, metrics, pauses, recording, subscribers, views
from dispatch.adapters import Channel
from dispatch.compose import Composer
from dispatch.errors import CredentialError, PermanentError, TransientError
from dispatch.models import SubscriberKind, SubscriberStatus
from dispatch.retry import RetryPolicy

log = logging.getLogger("dispatch.delivery")
# Outcomes are recorded in runs of this many (never before the server
# answered); a crash between a send and its record can repeat at most a run.
RECORD_EVERY = 20
MAX_REASON = 500  # subscriber.status_reason is VARCHAR(500)
BODY_CACHE_SIZE = 256  # a rendered body is some 40 KB: about 12 MB at most


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    subscriber_id: int
    address: str
    channel: str
    window_key: str
    status: str  # sent | pending (retry later) | failed | skipped | released | held | taken over
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
        self.pauses = pauses.Pauses(engine)
        self.recorder = recording.Recorder(engine, clock=clock)
        self._bodies = _BoundedCache(BODY_CACHE_SIZE)
        self._sitreps = views.SitrepViews()

    def process(self, claimed: list[ledger.Claimed], *, keeper=None) -> list[Outcome]:
        """Send a claimed batch and record every outcome. ``keeper`` (a
        LeaseKeeper) renews the batch's leases meanwhile."""
        keeper = keeper or leases.NoKeeper()
        keeper.hold(claimed)
        try:
            return self._process(claimed, keeper)
        finally:
            keeper.drop(c.id for c in claimed)

    def _process(self, claimed: list[ledger.Claimed], keeper) -> list[Outcome]:
        # Only reads: on SQLite a read-only session does not take the write
        # lock, which the other sender processes' claims and records wait for.
        with db.read_scope(self.engine) as session:
            people = views.readers(session, {c.subscriber_id for c in claimed})
            current = self._sitreps.current(session, {i for c in claimed for i in c.sitrep_ids})
        self.pauses.refresh()
        digests = _BatchDigests(current)
        outcomes: list[Outcome] = []
        unrecorded: list[_Result | _Awaited] = []
        # Readers of the same SITREPs next to each other: their shared body is rendered once.
        claimed = sorted(claimed, key=lambda c: (c.sitrep_ids, c.id))
        for index, c in enumerate(claimed):
            if self.stop.is_set():
                outcomes += self._record(unrecorded, keeper)
                unrecorded = []
                rest = [r for r in claimed[index:] if not keeper.lost(r.id)]
                self.recorder.write(lambda session: ledger.release(session, rest, now=self.clock()))  # noqa: B023
                outcomes += [self._log(r, people.get(r.subscriber_id), "released", "stopping") for r in rest]
                break
            if keeper.lost(c.id):  # its lease ran out and another sender has it now
                outcomes.append(self._log(c, people.get(c.subscriber_id), "taken over",
                                          "its claim was taken over by another sender; not sent from here"))
                continue
            unrecorded.append(self._deliver(c, people.get(c.subscriber_id), digests))
            if len(unrecorded) >= RECORD_EVERY:
                outcomes += self._record(unrecorded, keeper)
                unrecorded = []
        return outcomes + self._record(unrecorded, keeper)

    def _record(self, results: list[_Result | _Awaited], keeper) -> list[Outcome]:
        """Write a run of outcomes in one transaction: every message in it
        has already been accepted or refused by its server."""
        if not results:
            return []
        results = [r.settled() for r in results]  # every answer read before anything is written
        finishes = [r.action() for r in results]
        states = self.recorder.record(finishes)
        keeper.drop(r.claimed.id for r in results)
        return [self._log(r.claimed, r.person, state, r.detail) for r, state in zip(results, states)]

    def _log(self, c: ledger.Claimed, person, status: str, detail: str) -> Outcome:
        recipient = person[1] if person else None
        outcome = Outcome(delivery_id=c.id, subscriber_id=c.subscriber_id,
                          address=recipient.address if recipient else "?",
                          channel=recipient.kind if recipient else "?",
                          window_key=c.window_key, status=status, detail=detail)
        said = "receipt" if status == "sent" else "reason"
        log.info("delivery=%s subscriber=%s address=%s channel=%s window=%s outcome=%s %s=%s",
                 c.id, c.subscriber_id, outcome.address, outcome.channel, c.window_key, status, said, detail,
                 extra={"fields": {"delivery": c.id, "subscriber": c.subscriber_id, "address": outcome.address,
                                   "channel": outcome.channel, "window": c.window_key, "sitreps": list(c.sitrep_ids),
                                   "attempt": c.attempts, "outcome": status, said: detail}})
        return outcome

    def _deliver(self, c: ledger.Claimed, person, digests: _BatchDigests) -> _Result | _Awaited:
        now = self.clock
        skip = _why_skip(person, c, digests.current)
        if skip:
            return _Result(c, person, skip, lambda: (ledger.skipped(c, reason=skip, now=now()), None))
        _, recipient = person
        scope = pauses.scope_of(recipient.kind, recipient.address)
        pause = self.pauses.active(scope, now()) if scope is not None else None  # email has no installation credential
        if pause is not None:  # its credentials were refused: wait, without asking the server again
            return _Result(c, person, pause.reason, lambda: (ledger.paused(
                c, reason=f"paused: {pause.reason}", until=pause.until, now=now()), None))
        built, body_key = digests.build(recipient, c)
        channel = self.channels[recipient.kind]
        send_later = getattr(channel, "send_later", None)
        try:
            content = self._render(built, body_key, delivery_id=c.id)
            with metrics.send_timer(recipient.kind):
                if send_later is None:
                    receipt = channel.send(recipient.address, content, delivery_id=c.id, progress=c.receipt)
                    return self._settle(c, person, built, scope, lambda: receipt)
                waiting = send_later(recipient.address, content, delivery_id=c.id, progress=c.receipt)
        except Exception as exc:  # refused before the data went out: settled now
            return self._settle(c, person, built, scope, _raising(exc))
        # Its server's answer is read with a later message's replies, or at the
        # latest when the run it belongs to is recorded.
        return _Awaited(c, person, lambda: self._settle(c, person, built, scope, waiting.result))

    def _settle(self, c: ledger.Claimed, person, built: digest.Digest, scope, outcome: Callable[[], str]) -> _Result:
        """The result of one send: ``outcome`` returns its receipt or raises
        what the channel answered."""
        now = self.clock
        recipient = person[1]
        try:
            receipt = outcome()
        # The record is written later: bind the error now (``exc`` ends with its block).
        except CredentialError as exc:
            pause = self.pauses.refused(scope or recipient.kind, reason=str(exc), now=now())
            return _Result(c, person, str(exc), lambda e=exc, p=pause: (ledger.paused(
                c, reason=f"paused: {e}", until=p.until, now=now(), progress=e.progress), None))
        except TransientError as exc:
            return _Result(c, person, str(exc), lambda e=exc: (ledger.retry(
                c, error=str(e), now=now(), policy=self.policy, retry_after=e.retry_after, progress=e.progress), None))
        except PermanentError as exc:
            if exc.blames_recipient and recipient.kind == SubscriberKind.email.value:
                metrics.BOUNCES.inc()
            return _Result(c, person, str(exc), lambda e=exc: (
                ledger.failed(c, error=str(e), now=now(), progress=e.progress), self._blame(recipient, e)))
        except Exception as exc:  # a bug must not lose the delivery: log it, retry later
            log.error("delivery=%s: unexpected error", c.id, exc_info=exc)
            error = f"internal error: {type(exc).__name__}: {exc}"
            return _Result(c, person, error, lambda: (
                ledger.retry(c, error=error, now=now(), policy=self.policy), None))
        self.pauses.worked(scope)
        # What went out (SITREPs withdrawn since planning left out); after a partial
        # send (progress) earlier messages may have shown more, so nothing is narrowed.
        carried = None if c.receipt else built.sitrep_ids
        return _Result(c, person, receipt, lambda: (ledger.sent(c, receipt=receipt, now=now(), carried=carried), None))

    def _blame(self, recipient: digest.Recipient, exc: PermanentError):
        """What a permanent refusal of the address does to the subscriber."""
        if not exc.blames_recipient:
            return None
        reason = ledger.fit(str(exc), MAX_REASON)
        if recipient.kind == SubscriberKind.email.value:
            return lambda session: subscribers.record_hard_bounce(session, recipient.id, reason=reason,
                                                                 limit=self.bounce_limit)
        return lambda session: subscribers.disable_for(session, recipient.id, reason=reason)

    def _render(self, built: digest.Digest, key: tuple, *, delivery_id: int):
        body = self._bodies.get(key)
        if built.recipient.kind == SubscriberKind.slack.value:
            if body is None:
                body = self._bodies.put(key, self.composer.slack(built))
            return body
        if body is None:
            body = self._bodies.put(key, self.composer.email_renderer.shared(built))
        return self.composer.email_renderer.personalise(
            body, self.composer.personal(built.recipient, delivery_id=delivery_id),
            envelope_from=self.composer.return_path(delivery_id))


class _BatchDigests:
    """The digests of one batch. Readers of the same SITREPs who follow the
    same analysts get the same items, so those are ordered and marked once."""

    def __init__(self, current: dict[int, digest.SitrepView]):
        self.current = current
        self._items: dict[tuple, tuple] = {}

    def build(self, recipient: digest.Recipient, c: ledger.Claimed) -> tuple[digest.Digest, tuple]:
        """The reader's digest, and the key of its shared body (``Digest.body_key``,
        with the items' part worked out once per group)."""
        found = self._items.get((c.sitrep_ids, recipient.analysts))
        if found is None:
            sitreps = [self.current[i] for i in c.sitrep_ids if i in self.current]
            items = digest.digest_items(recipient.analysts, sitreps)
            found = self._items[(c.sitrep_ids, recipient.analysts)] = (items, digest.items_key(items))
        items, items_key = found
        built = digest.Digest(recipient=recipient, window_key=c.window_key, items=items)
        return built, (recipient.kind, recipient.format, built.flash, items_key)


class _BoundedCache:
    """Rendered bodies shared across batches and threads, least recently
    used first out, so memory stays bounded however long the list."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._data[key] = value
            if len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


@dataclass(frozen=True)
class _Result:
    """A delivery attempt whose outcome is known but not yet recorded."""

    claimed: ledger.Claimed
    person: tuple | None
    detail: str
    action: Callable  # () -> (ledger.Finish, subscriber effect or None)

    def settled(self) -> _Result:
        return self


@dataclass(frozen=True)
class _Awaited:
    """A send whose server has not answered yet (a pipelined message's data)."""

    claimed: ledger.Claimed
    person: tuple | None
    settle: Callable[[], _Result]  # reads the answer if nobody has yet

    def settled(self) -> _Result:
        return self.settle()


def _raising(exc: Exception) -> Callable[[], str]:
    def outcome() -> str:
        raise exc
    return outcome


def _why_skip(person, c: ledger.Claimed, current) -> str | None:
    if person is None:
        return "the subscriber was removed"
    status, recipient = person
    if status != SubscriberStatus.active:
        return f"the subscriber is {status.value}"
    problem = subscribers.quick_address_problem(recipient.kind, recipient.address)
    if problem:
        return f"the address is not valid any more: {problem}"
    if not any(i in current for i in c.sitrep_ids):
        return "every SITREP in it was withdrawn"
    return None
