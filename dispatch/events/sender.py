"""Posting due events: claim them from the ledger (their own claim, apart
from digests and notices), POST each signed body to its webhook, record the
outcome. Retried with the ledger's backoff until the attempts run out,
at-least-once: a receiver tells a repeat by its ``webhook-id``.

The HTTP request is bounded (``dispatch.outbound``): one total deadline for
the lookup, connection, request and answer (a server dripping its answer a
byte at a time is cut off when it runs out), only to a checked address
(no private, loopback or metadata address unless the operator lists its
network), no redirect followed (a 3xx is a failure), nothing of the answer
read beyond its status and headers. It runs in a thread of its own
(``EventWorker``), so a dead or slow endpoint never holds up an email. The
secret signs; it is never logged.

A claim never outlives its lease: at most what fits in half a lease at the
deadline each (``leases.claim_size``), and a ``LeaseKeeper`` renews what is
held while it is posted, so a slow endpoint never lets a second sender take
an event over and post it again.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from dispatch import db, leases, ledger, metrics, outbound
from dispatch.events import endpoints, signing
from dispatch.models import Event, EventWebhook, utcnow
from dispatch.retry import RetryPolicy

log = logging.getLogger("dispatch.events")
TIMEOUT_SECONDS = 5.0  # for the whole POST, lookup to answer
BATCH = 20
LEASE = timedelta(minutes=2)
POLL_SECONDS = 2.0
GONE = 410  # the receiver says: stop sending


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float = TIMEOUT_SECONDS,
         allowed: Iterable[outbound.Network] = ()) -> int:
    """The HTTP status of one POST, within ``timeout`` seconds in all;
    outbound.AddressRefused, OSError or HTTPException when there is none."""
    return outbound.post(url, body, headers, timeout=timeout, allowed=allowed).status  # the body is not read


class EventSender:
    def __init__(self, engine: Engine, *, policy: RetryPolicy, clock: Callable[[], datetime] = utcnow,
                 timeout: float = TIMEOUT_SECONDS, lease: timedelta = LEASE,
                 private_networks: Iterable[str] = ()):
        """``private_networks``: settings.outbound_private_networks, the
        internal networks the operator lets webhooks reach."""
        self.engine = engine
        self.policy = policy
        self.clock = clock
        self.timeout = timeout
        self.lease = lease
        self.allowed = outbound.networks(private_networks)
        # Every post ends within its deadline: a claim of this size is posted in half a lease.
        self.batch = leases.claim_size(batch_size=BATCH, lease_seconds=lease.total_seconds(),
                                       seconds_each=timeout)

    def drain(self, *, stop: threading.Event | None = None, keeper: leases.LeaseKeeper | None = None) -> int:
        """Post every due event; returns how many were handled. ``keeper``
        renews the leases of what is claimed (one of its own if not given)."""
        if keeper is None:
            with self.keeper() as keeper:
                return self._drain(keeper, stop)
        return self._drain(keeper, stop)

    def keeper(self) -> leases.LeaseKeeper:
        return leases.LeaseKeeper(self.engine, lease=self.lease, clock=self.clock)

    def _drain(self, keeper: leases.LeaseKeeper, stop: threading.Event | None) -> int:
        handled = 0
        while not (stop and stop.is_set()):
            with db.session_scope(self.engine) as session:
                claimed = ledger.claim(session, now=self.clock(), limit=self.batch, lease=self.lease, events=True)
            if not claimed:
                return handled
            keeper.hold(claimed)
            try:
                for c in claimed:
                    if keeper.lost(c.id):  # another sender took it over: it posts it, not this one
                        keeper.drop([c.id])
                        continue
                    finish, where, kind = self._send(c)
                    with db.session_scope(self.engine) as session:
                        ledger.record(session, [finish])
                    keeper.drop([c.id])
                    metrics.EVENTS.labels(outcome=finish.status.value).inc()
                    log.info("delivery=%s event=%s type=%s webhook=%s outcome=%s %s", c.id, ledger.event_id(c.window_key),
                             kind, where, finish.status.value, finish.detail,
                             extra={"fields": {"delivery": c.id, "event": ledger.event_id(c.window_key), "type": kind,
                                               "webhook": c.webhook_id, "url": where, "attempt": c.attempts,
                                               "outcome": finish.status.value, "detail": finish.detail}})
                    handled += 1
            finally:  # whatever was not posted goes back to the queue when its lease runs out
                keeper.drop(c.id for c in claimed)
        return handled

    def _send(self, c: ledger.Claimed) -> tuple[ledger.Finish, str, str]:
        now = self.clock()
        with db.session_scope(self.engine) as session:
            hook = session.get(EventWebhook, c.webhook_id) if c.webhook_id is not None else None
            event = session.get(Event, ledger.event_id(c.window_key))
            target = (hook.url, hook.secret) if hook is not None else None
            body = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False).encode() if event else None
            kind = event.type if event else "?"
        if target is None or body is None:
            return ledger.skipped(c, reason="the webhook or its event was removed", now=now), "?", kind
        url, secret = target
        where = endpoints.shown(url)  # what the log says: never the path, often the receiver's credential
        problem = endpoints.url_problem(url)
        if problem:
            return ledger.failed(c, error=f"the webhook URL {problem}", now=now), where, kind
        # The wall clock, not the scheduling one: receivers refuse a signature too far from their own time.
        headers = signing.headers(secret, msg_id=ledger.event_id(c.window_key), timestamp=int(time.time()),
                                  body=body)
        headers["User-Agent"] = "dispatch-event-webhooks"
        try:
            status = post(url, body, headers, timeout=self.timeout, allowed=self.allowed)
        except outbound.AddressRefused as exc:
            return ledger.failed(c, error=f"the webhook URL's host {exc}", now=now), where, kind
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            return ledger.retry(c, error=f"no answer: {reason}", now=now, policy=self.policy), where, kind
        if 200 <= status < 300:
            return ledger.sent(c, receipt=f"HTTP {status}", now=now), where, kind
        if 300 <= status < 400 or status == GONE:
            why = "redirects are not followed" if status < 400 else "the receiver asked to stop"
            return ledger.failed(c, error=f"HTTP {status}: {why}", now=now), where, kind
        return ledger.retry(c, error=f"HTTP {status}", now=now, policy=self.policy), where, kind


class EventWorker:
    """An ``EventSender`` in a thread of its own, looking every ``poll`` seconds."""

    def __init__(self, sender: EventSender, *, poll: float = POLL_SECONDS):
        self.sender = sender
        self.poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)

    def start(self) -> EventWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with self.sender.keeper() as keeper:
            while not self._stop.is_set():
                try:
                    self.sender.drain(stop=self._stop, keeper=keeper)
                except Exception:  # the database went away for a moment: try again at the next tick
                    log.exception("posting events failed; will try again")
                self._stop.wait(self.poll)
