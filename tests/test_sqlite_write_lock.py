"""SQLite's write lock, as dispatch waits for it (``db.begin_immediate``):
a writer waits while another connection holds the lock and begins as soon
as it is free; after the busy timeout it fails as SQLite would; any other
error is not waited on; and the connection's busy timeout is as before."""

import sqlite3
import threading
import time

import pytest

from dispatch import db


@pytest.fixture
def path(tmp_path):
    path = tmp_path / "lock.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (n INTEGER)")
    return path


def connect(path):
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={db.SQLITE_BUSY_TIMEOUT_MS}")
    return connection


def test_a_writer_waits_for_the_lock_and_begins_once_it_is_released(path):
    holder, waiter = connect(path), connect(path)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    began = threading.Event()

    def write():
        db.begin_immediate(waiter)
        began.set()
        waiter.execute("INSERT INTO t VALUES (2)")
        waiter.execute("COMMIT")

    thread = threading.Thread(target=write)
    thread.start()
    assert not began.wait(0.3)  # held: it waits (it did not fail either)
    holder.execute("COMMIT")
    thread.join(10)
    assert began.is_set()
    assert [n for (n,) in holder.execute("SELECT n FROM t ORDER BY n")] == [1, 2]
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (db.SQLITE_BUSY_TIMEOUT_MS,)


def test_past_the_timeout_it_fails_as_sqlite_does(path):
    holder, waiter = connect(path), connect(path)
    holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        db.begin_immediate(waiter, timeout_ms=200)
    assert time.monotonic() - started >= 0.2
    assert not waiter.in_transaction
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (200,)
    holder.execute("ROLLBACK")


def test_other_errors_are_not_waited_on(path):
    waiter = connect(path)
    waiter.execute("BEGIN")  # already in a transaction: an error of another kind
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        db.begin_immediate(waiter, timeout_ms=5000)
    assert time.monotonic() - started < 2


def test_engine_sessions_write_through_it(path, tmp_path):
    engine = db.create_engine(f"sqlite:///{path}")
    holder = connect(path)
    holder.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def write():
        with db.session_scope(engine) as session:
            session.execute(db.sa.text("INSERT INTO t VALUES (3)"))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.3)
    holder.execute("ROLLBACK")
    thread.join(10)
    assert done.is_set()
    assert [n for (n,) in holder.execute("SELECT n FROM t")] == [3]
    engine.dispose()


def test_the_schema_check_every_command_makes_takes_no_write_lock(tmp_path, monkeypatch):
    path = tmp_path / "schema.db"
    engine = db.create_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)
    engine = db.create_engine(f"sqlite:///{path}")
    holder = connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        assert db.is_current(engine)  # read without waiting for the writer
        assert db.current_revision(engine) == db.head_revision(engine)
    finally:
        holder.execute("ROLLBACK")
        engine.dispose()
