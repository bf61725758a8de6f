"""Keeping claims: a live sender renews the leases of the deliveries it
holds while it works through them, and claims no more than it can send
within one lease.

A claim's lease tells the planner "this worker is alive and on it"; when a
lease runs out the row goes back to the queue. Without renewal, a batch
that takes longer than the lease (a slow relay, a rate limit, Slack's
pacing) is handed to another worker while the first one is still sending
it, and goes out twice. So:

- ``LeaseKeeper`` renews every claim of this process's sender threads, in
  one statement, every quarter of a lease: a renewal can fail twice (a
  database hiccup) before a lease runs out. It runs beside the senders, so a
  single slow send (bounded by the adapters' timeouts) cannot outlast it.
  A claim it finds taken over (the process stalled past its lease) is
  marked, and the sender does not send it.
- ``claim_size`` keeps a claim to what one thread sends in half a lease at
  its measured pace (``SendPace``) and its share of the configured rate
  limit, so even without renewal a claim fits in its lease, and a slow
  sender does not hoard work that other processes could be doing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from dispatch import db, ledger

log = logging.getLogger("dispatch.delivery")
RENEWALS_PER_LEASE = 4
PROBE_CLAIM = 10  # before anything is measured
PACE_WEIGHT = 0.3  # of the newest batch, when the pace gets faster


def claim_size(*, batch_size: int, lease_seconds: float, seconds_each: float | None = None,
               rate_limit: float = 0.0, threads: int = 1) -> int:
    """How many deliveries one sender thread claims at a time: what it can
    send in half a lease at the slower of its measured pace and its share of
    ``rate_limit`` (messages a second for the whole process, 0: none), at
    most ``batch_size`` and at least one. Before any measurement and with no
    limit to go by, a small probe."""
    rates = []
    if seconds_each is not None:
        rates.append(1 / seconds_each if seconds_each > 0 else float("inf"))
    if rate_limit > 0:
        rates.append(rate_limit / max(1, threads))
    if not rates:
        return min(batch_size, PROBE_CLAIM)
    fits = min(rates) * lease_seconds / 2
    return max(1, min(batch_size, int(fits) if fits < batch_size else batch_size))


class SendPace:
    """Seconds one thread takes per delivery, from the batches it sent. A
    slowdown counts at once; a speed-up only bit by bit, so one fast batch
    (all skipped, say) does not make the next claim too big."""

    def __init__(self):
        self._each: float | None = None
        self._lock = threading.Lock()

    @property
    def seconds_each(self) -> float | None:
        return self._each

    def observe(self, seconds: float, count: int) -> None:
        if count <= 0:
            return
        each = seconds / count
        with self._lock:
            if self._each is None or each >= self._each:
                self._each = each
            else:
                self._each += PACE_WEIGHT * (each - self._each)


class LeaseKeeper:
    """Renews the leases of what this process's senders hold. Use it as a
    context manager around the sending threads; ``hold`` a batch when it is
    claimed, ``drop`` rows once their outcome is recorded (or held)."""

    def __init__(self, engine: Engine, *, lease: timedelta, clock: Callable[[], datetime],
                 every: float | None = None):
        self.engine = engine
        self.lease = lease
        self.clock = clock
        self.every = every if every is not None else lease.total_seconds() / RENEWALS_PER_LEASE
        self._held: dict[int, ledger.Claimed] = {}
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def hold(self, claimed: Iterable[ledger.Claimed]) -> None:
        with self._lock:
            self._held.update((c.id, c) for c in claimed)

    def drop(self, ids: Iterable[int]) -> None:
        with self._lock:
            for i in ids:
                self._held.pop(i, None)
                self._lost.discard(i)

    def lost(self, delivery_id: int) -> bool:
        """True when this claim was taken over: do not send it from here."""
        return delivery_id in self._lost

    def renew(self) -> set[int]:
        """One round of renewals; returns the ids found taken over."""
        with self._lock:
            claims: Sequence[ledger.Claimed] = sorted(self._held.values(), key=lambda c: c.id)
        if not claims:
            return set()
        try:
            with db.session_scope(self.engine) as session:
                lost = ledger.renew(session, claims, until=self.clock() + self.lease)
        except SQLAlchemyError as exc:
            log.warning("could not renew the leases of %s claimed deliveries (%s); trying again in %.1f s",
                        len(claims), type(exc).__name__, self.every)
            return set()
        with self._lock:  # rows dropped meanwhile were finished by their own sender: not lost
            lost = {i for i in lost if self._held.pop(i, None) is not None}
            self._lost |= lost
        return lost

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.renew()
            except Exception:  # never let the keeper die: the next round tries again
                log.exception("renewing leases failed")


class NoKeeper:
    """For a sender used on its own (tests, tools): nothing is renewed."""

    def hold(self, claimed) -> None:
        pass

    def drop(self, ids) -> None:
        pass

    def lost(self, delivery_id: int) -> bool:
        return False
