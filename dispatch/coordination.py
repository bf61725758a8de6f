"""Several `dispatch run` processes on one database.

PostgreSQL is the coordination engine; there is no broker of our own:
- Senders need nothing but the ledger (claims with SKIP LOCKED and a lease).
- Exactly one planner plans at a time: it holds a session-level advisory
  lock on a connection of its own, outside the pool (and never through a
  transaction-pooling PgBouncer). If that process dies, PostgreSQL drops the
  lock with its session and a standby takes it at its next try. A leader
  checks its connection before every planning run and stops planning the
  moment it is gone. Even two planners at once could not double a delivery:
  the ledger's unique key keeps them single.
- Every process records a heartbeat, for `dispatch status`.

On SQLite one process runs at a time: a second one is refused with a clear
message (an exclusive lock on a file beside the database — the real file,
whatever symlinks or relative paths lead to it).
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlmodel import col, delete, select

from dispatch import db
from dispatch.errors import ConflictError
from dispatch.models import Worker

# pg_advisory_lock takes a bigint: "dispatch" in ASCII.
PLANNER_LOCK_KEY = int.from_bytes(b"dispatch", "big") & 0x7FFF_FFFF_FFFF_FFFF
HEARTBEAT_EVERY = timedelta(seconds=5)
ALIVE_WITHIN = timedelta(seconds=30)


class PlannerLock:
    """Leadership for planning. On SQLite there is only ever one process."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self._lock_engine = (sa.create_engine(engine.url, poolclass=NullPool) if self.enabled else None)
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return not self.enabled or self._conn is not None

    def ensure(self) -> bool:
        """True when this process may plan now: it holds the lock (checking
        that its connection is still alive) or has just taken it."""
        if not self.enabled:
            return True
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                return True
            except SQLAlchemyError:
                self._drop()  # the session, and with it the lock, is gone
        try:
            conn = self._lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError:
            return False
        try:
            if conn.execute(sa.select(sa.func.pg_try_advisory_lock(PLANNER_LOCK_KEY))).scalar():
                self._conn = conn
                return True
        except SQLAlchemyError:
            pass
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.select(sa.func.pg_advisory_unlock(PLANNER_LOCK_KEY)))
            except SQLAlchemyError:
                pass
            self._drop()
        if self._lock_engine is not None:
            self._lock_engine.dispose()

    def _drop(self) -> None:
        try:
            self._conn.close()
        except SQLAlchemyError:
            pass
        self._conn = None


class SqliteRunLock:
    """One `dispatch run` per SQLite file; a second one is refused."""

    def __init__(self, engine: Engine):
        database = engine.url.database
        in_memory = not database or database == ":memory:" or database.startswith("file::memory:")
        self.database = None if engine.dialect.name != "sqlite" or in_memory else Path(os.path.realpath(database))
        # Keyed on the resolved file: the same database through a symlink is the same database.
        self.path = Path(f"{self.database}.run.lock") if self.database else None
        self._file = None

    def acquire(self) -> None:
        if self.path is None:
            return
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            raise ConflictError(
                f"{holder} is already running dispatch on {self.database}; "
                "on SQLite one `dispatch run` runs at a time — stop it first, or use PostgreSQL "
                "(DISPATCH_DATABASE_URL=postgresql+psycopg://…) to run several") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


# --- heartbeats ------------------------------------------------------------------

def register(engine: Engine, *, role: str, now: datetime) -> int:
    with db.session_scope(engine) as session:
        worker = Worker(name=f"{socket.gethostname()}:{os.getpid()}", role=role, started_at=now, heartbeat_at=now)
        session.add(worker)
        session.flush()
        return worker.id


def heartbeat(engine: Engine, worker_id: int, *, now: datetime, leader: bool) -> None:
    with db.session_scope(engine) as session:
        worker = session.get(Worker, worker_id)
        if worker is None:  # removed as dead while we were cut off: come back
            session.add(Worker(id=worker_id, name=f"{socket.gethostname()}:{os.getpid()}", role="?",
                               started_at=now, heartbeat_at=now, leader=leader))
            return
        worker.heartbeat_at, worker.leader = now, leader
        if leader:  # only one leader is shown: the others lost it
            session.execute(sa.update(Worker).where(col(Worker.id) != worker_id).values(leader=False))


def deregister(engine: Engine, worker_id: int) -> None:
    with db.session_scope(engine) as session:
        session.execute(delete(Worker).where(col(Worker.id) == worker_id))


def forget_dead(engine: Engine, *, now: datetime, after: timedelta = timedelta(hours=1)) -> None:
    with db.session_scope(engine) as session:
        session.execute(delete(Worker).where(col(Worker.heartbeat_at) < now - after))


def live_workers(engine: Engine, *, now: datetime) -> list[Worker]:
    with db.session_scope(engine) as session:
        return list(session.exec(select(Worker).where(col(Worker.heartbeat_at) >= now - ALIVE_WITHIN)
                                 .order_by(col(Worker.id))).all())
