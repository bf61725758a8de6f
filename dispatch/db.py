"""Engines, sessions and schema migrations.

SQLite gets WAL, a busy timeout and foreign keys on every connection, and
every transaction starts with BEGIN IMMEDIATE: under WAL, several threads that
read and then write inside a deferred transaction fail with "database is
locked" at once, whatever the busy timeout (SQLAlchemy's documented recipe).
``read_scope`` is the exception: a session that only reads, and so need not
wait for the writer.
PostgreSQL URLs are used unchanged.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:  # SQLModel only where a session is opened: a Core read (read_connection) needs none
    from sqlmodel import Session

SQLITE_CACHED_STATEMENTS = 16
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseURLError(ValueError):
    pass


def normalise_url(url: str) -> sa.URL:
    """Parse a database URL; plain postgresql:// means psycopg 3, not psycopg2."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseURLError(f"cannot read the database URL {url!r}: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(url: str, *, pool_size: int = 5, statement_timeout: float = 0, **kwargs) -> Engine:
    """``statement_timeout`` (seconds, PostgreSQL only) stops a statement
    stuck behind a lock instead of hanging a worker; 0 means none."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    connect_args = {}
    if parsed.get_backend_name() == "postgresql":
        # No JIT: our statements read a page or write a batch, and PostgreSQL
        # compiles whenever a plan's estimate is big — a LIMIT 51 over a
        # filter it cannot estimate spent 15–40 ms compiling to run in 1 ms.
        options = ["-c jit=off"]
        if statement_timeout:
            options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
        connect_args["options"] = " ".join(options)
    # pre_ping: a pooled connection cut by a restart or pg_terminate_backend is
    # replaced before use instead of failing the next job.
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size,
                            connect_args=connect_args, **kwargs)


def configured_engine(settings) -> Engine:
    """The engine ``settings`` (dispatch.config.Settings) describe: their
    URL, pool size and statement timeout. Its schema is not checked here
    (dispatch.bootstrap.open_engine, AppContext.read_engine)."""
    return create_engine(settings.database_url, pool_size=settings.db_pool_size,
                         statement_timeout=settings.db_statement_timeout)


def _create_private(path: Path) -> None:
    """A new database file is readable by its owner only (0600): it holds
    readers' addresses. SQLite takes an empty file as a new database, and
    gives its -wal and -shm files the database file's mode."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        path = Path(url.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
    # A small prepared-statement cache: IN lists of a new length are new
    # statements, and with the default 128 per connection, statements with
    # thousands of placeholders (the planner's cursor updates) pile up to tens of MB.
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                 "cached_statements": SQLITE_CACHED_STATEMENTS})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            dbapi = connection.dialect.loaded_dbapi
            try:
                begin_immediate(connection.connection.driver_connection)
            except dbapi.Error as exc:
                # Raised from this hook, sqlite3's error would reach the caller bare: every
                # caller (recorder retries, lease keeper, pauses, heartbeats) catches
                # SQLAlchemy's errors, as BEGIN IMMEDIATE through exec_driver_sql raised them.
                raise sa.exc.DBAPIError.instance("BEGIN IMMEDIATE", (), exc, dbapi.Error,
                                                 dialect=connection.dialect) from exc

    return engine


WRITE_LOCK_STEPS_S = (0.0002, 0.0005, 0.001, 0.002)  # then every 2 ms


def begin_immediate(dbapi_connection, *, timeout_ms: int | None = None) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock in short steps of our own.

    SQLite's own busy handler sleeps 1, 2, 5, 10 … up to 100 ms between
    tries, and a writer that commits and begins again at once wins every
    time it is asleep: two sender processes that each write every few
    milliseconds (claims, records) spent a quarter of their time waiting,
    single waits of 50–90 ms, up to 0.6 s while the planner wrote its
    batches. Looking again within 2 ms takes the lock in the next gap. The
    timeout is the busy timeout's (then "database is locked", as before).
    """
    import sqlite3
    import time

    if timeout_ms is None:  # the busy timeout every connection is given (read now, as _on_connect does)
        timeout_ms = SQLITE_BUSY_TIMEOUT_MS
    try:  # the PRAGMA inside: an interrupt right after it still restores the timeout
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        deadline = time.monotonic() + timeout_ms / 1000
        tries = 0
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # The primary code: SQLITE_BUSY_RECOVERY (another connection rebuilding the
                # WAL index after a crash) is one of SQLite's BUSY codes, and its handler waits too.
                if getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY) & 0xFF != sqlite3.SQLITE_BUSY \
                        or time.monotonic() >= deadline:
                    raise
            time.sleep(WRITE_LOCK_STEPS_S[min(tries, len(WRITE_LOCK_STEPS_S) - 1)])
            tries += 1
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={timeout_ms}")


READ_ONLY_OPTION = "dispatch_read_only"


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A Core connection that only reads, as ``read_scope`` is a session
    that only reads (on SQLite a DEFERRED transaction; rolled back at the
    end). For a command that reads a few rows: no ORM, no SQLModel."""
    with engine.execution_options(**{READ_ONLY_OPTION: True}).connect() as connection:
        try:
            yield connection
        finally:
            connection.rollback()


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A session that only reads. On SQLite it begins DEFERRED, so it does
    not wait for a writer: under WAL it reads a consistent snapshot while
    another connection writes (a write in it would fail with "database is
    locked"). On PostgreSQL it is an ordinary transaction."""
    from sqlmodel import Session

    with Session(engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False) as session:
        try:
            yield session
        finally:
            session.rollback()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def write_scope(engine: Engine) -> Iterator[Connection]:
    """``session_scope`` without the ORM: a Core connection in a transaction
    (on SQLite BEGIN IMMEDIATE, as every write), committed on success and
    rolled back on any error."""
    with engine.begin() as connection:
        yield connection


# --- migrations -------------------------------------------------------------

# alembic is imported only where a migration is run or inspected: importing it
# costs a quarter of a second, and every command checks the schema on opening
# the database (is_current), which the fast path below answers without it.

def _alembic_config(engine: Engine | None):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("dispatch") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def known_revision(revision: str) -> bool:
    """Whether this release has a migration of that name (a backup made by
    a newer release may be at a schema this one cannot read)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(_alembic_config(None)).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with read_connection(engine) as connection:  # a read: on SQLite no write lock to wait for
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create the schema or bring it up to date; harmless when already current."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(engine), revision)


# A version file's own "revision = '0012'" and "down_revision = '0011'" lines
# (annotated or not): read as text, which is a twentieth of parsing each file.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


def scanned_head() -> str | None:
    """The head revision read from the version files' own ``revision`` and
    ``down_revision`` assignments, without importing alembic. None unless the
    files make one simple chain (a merge or branch goes the slow way);
    tests/test_cli_imports.py checks it against alembic's answer."""
    revisions: dict[str, object] = {}
    for path in (resources.files("dispatch") / "migrations" / "versions").iterdir():
        if not path.name.endswith(".py"):
            continue
        found: dict[str, object] = {}
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            if name in found:
                return None  # assigned twice: not the simple file this reads
            try:
                found[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return None
        if not isinstance(found.get("revision"), str):
            return None
        revisions[found["revision"]] = found.get("down_revision")
    parents = set(revisions.values())
    if not all(p is None or isinstance(p, str) for p in parents) or len(parents) != len(revisions):
        return None
    heads = [r for r in revisions if r not in parents]
    return heads[0] if len(heads) == 1 else None


def _stored_revisions(engine: Engine) -> set[str] | None:
    try:  # every command checks the schema: a read, which on SQLite waits for no writer
        with read_connection(engine) as connection:
            return {row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")}
    except sa.exc.DBAPIError:  # no such table yet: let alembic say what is there
        return None


def is_current(engine: Engine) -> bool:
    head = scanned_head()
    if head is not None and _stored_revisions(engine) == {head}:
        return True
    return current_revision(engine) == head_revision(engine)
