"""One sender's walk through its own claims, one delivery at a time (the
confirmation notices, the correction and retraction notices), with the
promises the digest sender keeps (dispatch/sender.py):

- a claim is no larger than fits in half a lease at the pace measured so far;
- a ``LeaseKeeper`` renews it while the batch is worked through, so a slow
  relay never hands the rest to another process, which would send it too;
- a claim found taken over is not sent from here;
- outcomes are written by ``recording.Recorder``, which retries and, failing
  that, holds a row rather than let it be sent again;
- at a stop, the rest of a batch goes back at once, its attempt uncounted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from dispatch import db, leases, ledger, recording

log = logging.getLogger("dispatch.claims")


class ClaimLoop:
    def __init__(self, engine: Engine, *, claim: Callable[[Session, datetime, int, timedelta], list[ledger.Claimed]],
                 send: Callable[[ledger.Claimed], ledger.Finish],
                 report: Callable[[ledger.Claimed, ledger.Finish, str], None],
                 lease: timedelta, clock: Callable[[], datetime], batch: int):
        """``claim(session, now, limit, lease)`` takes due rows of its kind;
        ``send`` makes one's outcome; ``report(claimed, finish, state)`` logs
        and counts it once it is recorded (``state``: its status, or held)."""
        self.engine = engine
        self.claim, self.send, self.report = claim, send, report
        self.lease, self.clock, self.batch = lease, clock, batch
        self.pace = leases.SendPace()
        self.recorder = recording.Recorder(engine, clock=clock, events=False)

    def drain(self, *, stop: threading.Event | None = None, keeper: leases.LeaseKeeper | None = None) -> int:
        """Send every due row; returns how many were handled. ``keeper``
        renews the claims meanwhile; without one, one is run here."""
        if keeper is None:
            with leases.LeaseKeeper(self.engine, lease=self.lease, clock=self.clock) as keeper:
                return self.drain(stop=stop, keeper=keeper)
        handled = 0
        while not (stop and stop.is_set()):
            limit = leases.claim_size(batch_size=self.batch, lease_seconds=self.lease.total_seconds(),
                                      seconds_each=self.pace.seconds_each)
            with db.session_scope(self.engine) as session:
                claimed = self.claim(session, self.clock(), limit, self.lease)
            if not claimed:
                return handled
            keeper.hold(claimed)
            started = time.monotonic()
            try:
                for index, c in enumerate(claimed):
                    if stop and stop.is_set():  # shutting down: the rest goes back at once, attempt uncounted
                        rest = [r for r in claimed[index:] if not keeper.lost(r.id)]
                        self.recorder.write(lambda session: ledger.release(session, rest,  # noqa: B023
                                                                           now=self.clock()))
                        break
                    if keeper.lost(c.id):  # its lease ran out and another sender has it now
                        log.warning("delivery=%s: its claim was taken over by another sender; not sent from here",
                                    c.id)
                        continue
                    finish = self.send(c)
                    (state,) = self.recorder.record([(finish, None)])
                    keeper.drop([c.id])
                    self.report(c, finish, state)
                    handled += 1
            finally:
                keeper.drop(c.id for c in claimed)
            self.pace.observe(time.monotonic() - started, len(claimed))
        return handled
