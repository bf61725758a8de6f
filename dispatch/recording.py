"""Writing outcomes after a send, when the database does not want to.

By the time an outcome is written the message is out (or was refused), so
losing the record must not mean sending it again. In order:

1. The run of outcomes is written in one transaction. A connection that
   was cut (restart, failover) or a locked SQLite file is retried for some
   seconds; any other database error (a constraint, a trigger, a value the
   column refuses) a few times more briefly.
2. If that still fails, each outcome is written alone, so one bad row does
   not keep the others unrecorded; its side effect on the subscriber (a
   bounce count, a disabled channel) is dropped first if it is the part
   that fails.
3. A row that cannot be written even alone is held (``ledger.hold``): it
   stays `sending` with a lease that never runs out, so no reclaim sends it
   again. It is logged as an error, counted by `dispatch status`, and
   `dispatch retry ID` requeues it once a person has looked.
4. If even the hold cannot be written, the database refuses every write:
   that is logged as critical; the row's lease runs out and it is sent once
   more, as after a crash (docs/reliability.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from dispatch import db, ledger
from dispatch.events import emit as emitted

log = logging.getLogger("dispatch.delivery")
DB_WRITE_TRIES = 6  # a cut connection: 0.25 + 0.5 + … + 4 s, about 8 s in all
OTHER_WRITE_TRIES = 3  # any other database error: 0.1 + 0.2 s
HELD = "held"
UNRECORDED = "unrecorded"

# (how the delivery ends, what it does to the subscriber, or None)
Finishing = tuple[ledger.Finish, Callable | None]


class Recorder:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime], events: bool = True):
        """``events``: emit delivery.sent / delivery.failed (digests); notices of
        corrections and retractions have events of their own."""
        self.engine = engine
        self.clock = clock
        self.events = events

    def write(self, action, *, tries: int = DB_WRITE_TRIES, other_tries: int = OTHER_WRITE_TRIES, scope=None):
        """Run ``action(session)`` in a transaction, trying again after a
        database error: up to ``tries`` times for a connection that was
        lost, ``other_tries`` for anything else. The last error is raised.
        ``scope``: what opens the transaction (``db.session_scope``, or
        ``db.write_scope`` for a Core connection instead of a session)."""
        scope = scope or db.session_scope
        lost = other = 0
        while True:
            try:
                with scope(self.engine) as session:
                    return action(session)
            except (OperationalError, InterfaceError) as exc:
                lost += 1
                if lost >= tries:
                    raise
                log.warning("database connection lost while recording (%s); trying again", type(exc).__name__)
                time.sleep(0.25 * 2 ** (lost - 1))
            except SQLAlchemyError as exc:
                other += 1
                if other >= other_tries:
                    raise
                log.warning("could not record (%s: %s); trying again", type(exc).__name__, _first_line(exc))
                time.sleep(0.1 * 2 ** (other - 1))

    def record(self, finishes: Sequence[Finishing]) -> list[str]:
        """Write outcomes; returns each one's state: its status, or held /
        unrecorded when it could not be written."""
        try:
            # Most runs need no ORM (no effect on a subscriber, no webhook that wants
            # delivery events): written on a Core connection, without a session's
            # machinery, which cost more than the run's own statements in Python.
            if any(effect for _, effect in finishes) or not self.write(
                    lambda connection: _write_core(connection, finishes, events=self.events), scope=db.write_scope):
                self.write(lambda session: _write_all(session, finishes, events=self.events))
            return [f.status.value for f, _ in finishes]
        except Exception as exc:  # noqa: BLE001 — whatever it is, the messages are out: keep them single
            log.error("could not record %s outcomes in one go (%s: %s); writing them one by one",
                      len(finishes), type(exc).__name__, _first_line(exc))
        return [self._record_alone(finish, effect) for finish, effect in finishes]

    def _record_alone(self, finish: ledger.Finish, effect) -> str:
        c = finish.claimed
        attempts = [[(finish, effect)], [(finish, None)]] if effect else [[(finish, None)]]
        for run in attempts:
            try:
                self.write(lambda session: _write_all(session, run, events=self.events),  # noqa: B023
                           tries=2, other_tries=2)
                if run[0][1] is None and effect is not None:
                    log.error("delivery=%s: recorded as %s, but its effect on the subscriber could not be "
                              "written", c.id, finish.status.value)
                return finish.status.value
            except Exception:  # noqa: BLE001
                continue
        what = f"outcome {finish.outcome}: {finish.detail}"
        reason = f"held: the outcome could not be recorded, so it is not sent again automatically ({what})"
        for note in (reason, None):
            try:
                held = self.write(
                    lambda session: ledger.hold(session, [c], now=self.clock(), reason=note),  # noqa: B023
                    tries=2, other_tries=2)
            except Exception:  # noqa: BLE001
                continue
            if held:
                log.error("delivery=%s HELD: its outcome (%s) could not be recorded; it stays `sending` and is not "
                          "sent again automatically — `dispatch status` counts it, `dispatch retry %s` requeues it",
                          c.id, ledger.fit(what, 300), c.id)
                return HELD
            log.error("delivery=%s: its outcome (%s) could not be recorded, and its claim had been taken over",
                      c.id, ledger.fit(what, 300))
            return UNRECORDED
        log.critical("delivery=%s: neither its outcome (%s) nor a hold could be written: the database refuses "
                     "every write; when its lease runs out it will be sent again", c.id, ledger.fit(what, 300))
        return UNRECORDED


def _write_all(session, finishes: Sequence[Finishing], *, events: bool = True) -> None:
    ledger.record(session, [f for f, _ in finishes])
    if events:  # delivery.sent / delivery.failed, in the same transaction as the outcome they report
        emitted.deliveries_finished(session, [f for f, _ in finishes])
    for _, effect in finishes:
        if effect:
            effect(session)


def _write_core(connection, finishes: Sequence[Finishing], *, events: bool = True) -> bool:
    """``_write_all`` for a run with no effects, on a Core connection; False,
    with nothing written, when a webhook wants events of it (events are
    written through the ORM: ``_write_all`` then writes the run)."""
    done = [f for f, _ in finishes]
    if events and emitted.delivery_events(done, emitted.webhooks(connection)):
        return False
    ledger.record(connection, done)
    return True


def _first_line(exc: BaseException) -> str:
    return ledger.fit(str(exc).splitlines()[0] if str(exc) else "", 200)
