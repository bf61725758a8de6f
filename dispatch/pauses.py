"""Credential pauses: when the installation's own credentials are refused
(a revoked Slack bot token), sending through them stops for a while.

A bad bot token is nobody's channel's fault, so no channel is disabled:
deliveries that would use it go back to the queue until the pause ends, and
the first one tried after that shows whether the token works again — if it
does, sending resumes; if not, the pause starts over, longer (1, 2, 4 …
minutes, at most 15). One warning goes to the log when a pause begins, not
one per delivery.

A pause is shared through the database (a ``stored_setting`` row), so
`dispatch status`, the dashboard and every sender process see it; each
process reads it again at most every few seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from dispatch import db
from dispatch.models import StoredSetting

log = logging.getLogger("dispatch.delivery")
SLACK_BOT_TOKEN = "slack-bot-token"
# What each scope is, for people: (what pauses, what to check).
SCOPES = {SLACK_BOT_TOKEN: ("Slack bot-token sending", "DISPATCH_SLACK_BOT_TOKEN")}
FIRST_PAUSE = timedelta(minutes=1)
LONGEST_PAUSE = timedelta(minutes=15)
REFRESH_SECONDS = 5.0
_KEY = "pause:"


def scope_of(kind: str, address: str) -> str | None:
    """The installation credential a delivery goes out with, if any. A
    webhook URL is its channel's own credential, so it has none."""
    if kind == "slack" and not address.startswith(("http://", "https://")):
        return SLACK_BOT_TOKEN
    return None


@dataclass(frozen=True)
class Pause:
    scope: str
    reason: str
    since: datetime
    until: datetime  # the next try
    streak: int = 1  # failed tries in a row

    def describe(self) -> str:
        what, check = SCOPES.get(self.scope, (self.scope, "its credentials"))
        return (f"{what} is paused since {self.since:%Y-%m-%d %H:%M} UTC ({self.reason}); channels stay active "
                f"and their deliveries wait; next try {self.until:%Y-%m-%d %H:%M:%S} UTC. Check {check}.")


def pause_length(streak: int) -> timedelta:
    return min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** max(0, streak - 1))


class Pauses:
    """This process's view of the pauses, kept in step with the database."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._pauses: dict[str, Pause] = {}
        self._lock = threading.Lock()
        self._read_at = float("-inf")

    def refresh(self) -> None:
        """Pick up pauses begun or ended by other processes (at most every few seconds)."""
        if time.monotonic() - self._read_at < REFRESH_SECONDS:
            return
        self._read_at = time.monotonic()
        try:
            stored = {p.scope: p for p in load(self.engine)}
        except SQLAlchemyError as exc:
            log.warning("could not read the credential pauses (%s)", type(exc).__name__)
            return
        with self._lock:
            self._pauses = stored

    def active(self, scope: str | None, now: datetime) -> Pause | None:
        if scope is None:
            return None
        pause = self._pauses.get(scope)
        return pause if pause is not None and pause.until > now else None

    def refused(self, scope: str, *, reason: str, now: datetime) -> Pause:
        """The credentials were refused: begin (or lengthen) the pause."""
        with self._lock:
            current = self._pauses.get(scope)
            if current is not None and current.until > now:
                return current  # another thread's request raced this one: one pause
            streak = current.streak + 1 if current is not None else 1
            pause = Pause(scope, reason, since=current.since if current else now, until=now + pause_length(streak),
                          streak=streak)
            self._pauses[scope] = pause
        if current is None:
            log.warning("%s", pause.describe())
        else:
            log.info("%s is still refused (%s); trying again at %s", SCOPES.get(scope, (scope,))[0], reason,
                     pause.until.isoformat())
        self._store(lambda session: save(session, pause))
        return pause

    def worked(self, scope: str | None) -> None:
        """A send through ``scope`` went through: end its pause, if any."""
        if scope is None or scope not in self._pauses:
            return
        with self._lock:
            pause = self._pauses.pop(scope, None)
        if pause is not None:
            log.warning("%s works again: sending resumed after a pause since %s UTC",
                        SCOPES.get(scope, (scope,))[0], f"{pause.since:%Y-%m-%d %H:%M}")
            self._store(lambda session: clear(session, scope))

    def _store(self, action) -> None:
        try:
            with db.session_scope(self.engine) as session:
                action(session)
        except SQLAlchemyError as exc:  # the pause still holds in this process
            log.warning("could not store the credential pause (%s)", type(exc).__name__)


# --- stored, for every process and for `dispatch status` -------------------------

def save(session, pause: Pause) -> None:
    value = json.dumps({"reason": pause.reason, "since": pause.since.isoformat(),
                        "until": pause.until.isoformat(), "streak": pause.streak})
    # The dialect's own INSERT … ON CONFLICT, imported here: SQLAlchemy's
    # PostgreSQL dialect takes a few hundred milliseconds to import, which a
    # run on SQLite need not pay (a run on PostgreSQL has it already).
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = StoredSetting.__table__
    session.execute(insert(table).values(key=_KEY + pause.scope, value=value)
                    .on_conflict_do_update(index_elements=["key"], set_={"value": value}))


def clear(session, scope: str) -> None:
    session.execute(sa.delete(StoredSetting.__table__).where(StoredSetting.__table__.c.key == _KEY + scope))


def load(engine: Engine) -> list[Pause]:
    with db.read_scope(engine) as session:
        rows = session.exec(select(StoredSetting.key, StoredSetting.value)
                            .where(col(StoredSetting.key).startswith(_KEY, autoescape=True))
                            .order_by(col(StoredSetting.key))).all()
    pauses = []
    for key, value in rows:
        try:
            data = json.loads(value)
            pauses.append(Pause(key[len(_KEY):], data["reason"], datetime.fromisoformat(data["since"]),
                                datetime.fromisoformat(data["until"]), int(data.get("streak", 1))))
        except (ValueError, KeyError, TypeError):
            continue  # not ours to read; never fail a status page over it
    return pauses
