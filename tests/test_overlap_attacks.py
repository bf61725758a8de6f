"""Outsider attacks on `run --once --senders N` sending while its parent
still plans (helpers forked first, a pipe saying when planning ends), on
the SQLite write lock's own short polling (db.begin_immediate), and on
claims that shrink at the end of a pass. Real parts: the CLI in a
subprocess, the database (SQLite and PostgreSQL), an SMTP server on
loopback. The only thing injected is a slow planner (each batch written
after a pause, as tests/test_sender_processes.py does), so that signals
and failures land while planning is under way."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from dispatch import bootstrap, db, digest, leases, ledger, mime, sitreps, subscribers
from dispatch.digest import Window
from dispatch.ledger import Claimed
from dispatch.models import DeliveryStatus, Subscriber, SubscriberKind
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .deliverytools import APPROVED, assert_each_sent_once, received, rows, seed
from .servers import scripted_smtp
from .test_sender_processes import SLOW_PLANNER, run_env


def cli(*args):
    return [sys.executable, "-c", SLOW_PLANNER, "run", "--once", "--json", *args]


def helper_pids(engine, parent: int) -> list[int]:
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM worker WHERE role = 'sender'")).scalars().all()
    return [pid for pid in (int(n.rsplit(":", 1)[1]) for n in names) if pid != parent]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet) is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def message_ids(engine, ids) -> set[str]:
    installation = bootstrap.installation_id(engine)
    return {f"<delivery-{i}.{mime.delivery_tag(installation, i)}@example.org>" for i in ids}


# --- exactly once, several helpers, a slow planner ---------------------------------


@pytest.mark.parametrize("senders", [3, 4])
def test_every_delivery_once_with_several_helpers_sending_while_planning(engine, database_url, tmp_path, senders):
    readers = 150  # batches of 10, 20, 40, 80: four writes, 0.4 s apart
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.005
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    try:
        env = run_env(database_url, sink, DISPATCH_SENDER_THREADS="2")
        done = subprocess.run(cli("--senders", str(senders)), env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=180)
    finally:
        sink.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["senders"] == senders and summary["senders_lost"] == 0
    assert summary["outcomes"] == {"sent": readers}
    assert_each_sent_once(engine, handler, readers)


# --- the parent killed, stopped or interrupted while it plans -------------------------


def _start_and_wait_for_sending(engine, database_url, tmp_path, *, readers=150, senders=3, delay=0.02):
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = delay
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    env = run_env(database_url, sink)
    run = subprocess.Popen(cli("--senders", str(senders)), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: len(helper_pids(engine, run.pid)) == senders - 1), "the helpers never registered"
    helpers = helper_pids(engine, run.pid)
    # Something sent (the first batch written) and planning still under way (not every batch written).
    assert wait_for(lambda: len(handler.received) >= 3)
    with engine.connect() as conn:
        planned = conn.execute(sa.text("SELECT count(*) FROM delivery")).scalar()
    assert planned < readers, "planning ended before the test could interrupt it"
    return sink, handler, env, run, helpers


def _resume_and_check(engine, sink, handler, env, tmp_path, *, readers, left_sending):
    later = (datetime.now(timezone.utc) + timedelta(minutes=6)).isoformat()  # every lease run out
    resumed = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--json", "--now", later,
                              "--senders", "3"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    time.sleep(0.3)
    sink.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = rows(engine)
    assert len(final) == readers and {d.status for d in final} == {DeliveryStatus.sent}
    got = received(handler)
    assert set(got) == {d.receipt for d in final}  # none lost
    doubled = {mid for mid, n in got.items() if n > 1}
    # Only what a killed process had sent and not yet recorded may arrive twice.
    assert doubled <= message_ids(engine, left_sending)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_parent_killed_while_planning_takes_its_helpers_and_a_later_run_finishes(engine, database_url, tmp_path,
                                                                                  how):
    readers = 150
    sink, handler, env, run, helpers = _start_and_wait_for_sending(engine, database_url, tmp_path, readers=readers)
    try:
        os.kill(run.pid, how)
        run.communicate(timeout=60)
        assert wait_for(lambda: not any(alive(p) for p in helpers), timeout=20), "a helper outlived its parent"
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == -how
    left = {d.id for d in rows(engine) if d.status == DeliveryStatus.sending}
    assert {d.status for d in rows(engine)} <= {DeliveryStatus.sent, DeliveryStatus.sending, DeliveryStatus.pending}
    _resume_and_check(engine, sink, handler, env, tmp_path, readers=readers, left_sending=left)


def test_a_helper_killed_while_the_parent_plans(engine, database_url, tmp_path):
    readers = 150
    sink, handler, env, run, helpers = _start_and_wait_for_sending(engine, database_url, tmp_path, readers=readers)
    try:
        os.kill(helpers[0], signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["senders_lost"] == 1 and f"sender process {helpers[0]} ended" in stderr
    left = {d.id for d in rows(engine) if d.status == DeliveryStatus.sending}
    assert len(left) <= 5  # its one claim (DISPATCH_BATCH_SIZE 5)
    assert {d.status for d in rows(engine) if d.id not in left} == {DeliveryStatus.sent}
    _resume_and_check(engine, sink, handler, env, tmp_path, readers=readers, left_sending=left)


# --- planning fails half-way ------------------------------------------------------------


def _refuse_deliveries_for(engine, subscriber_id: int, *, flash_too: bool = True) -> None:
    """A real write failure in the planner's batch: the database refuses one
    row (``flash_too`` False: only a digest's, not a FLASH's)."""
    which = f"NEW.subscriber_id = {subscriber_id}"
    if not flash_too:
        which += " AND substr(NEW.window_key, 1, 6) <> 'flash:'"
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"CREATE TRIGGER refuse BEFORE INSERT ON delivery WHEN {which} "
                                 "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                                 f"IF {which} THEN "
                                 "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON delivery FOR EACH ROW "
                                 "EXECUTE FUNCTION refuse()")


def _allow_deliveries(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse" if engine.dialect.name == "sqlite"
                             else "DROP TRIGGER refuse ON delivery")


def test_planning_that_fails_half_way_ends_the_pass_with_its_helpers(engine, database_url, tmp_path):
    readers = 150
    sink, handler = scripted_smtp(tmp_path / "mail")
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    with engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT id FROM subscriber ORDER BY id")).scalars().all()
    _refuse_deliveries_for(engine, ids[100])  # in the fourth batch (10, 20, 40, then 80)
    env = run_env(database_url, sink)
    failed = subprocess.run(cli("--senders", "3"), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0
    assert "refused by the test" in failed.stderr
    # What was planned before the failure was sent, once; the failed batch left nothing behind.
    first = rows(engine)
    assert len(first) == 70 and {d.status for d in first} == {DeliveryStatus.sent}
    _allow_deliveries(engine)
    resumed = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--json", "--senders", "3"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    sink.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = rows(engine)
    assert len(final) == readers and {d.status for d in final} == {DeliveryStatus.sent}
    got = received(handler)
    assert set(got) == {d.receipt for d in final} and set(got.values()) == {1}


def test_ctrl_c_while_planning_stops_the_pass_and_its_helpers(engine, database_url, tmp_path):
    """Ctrl-C reaches the whole process group: the helpers ignore it, the
    parent stops planning; nothing is left claimed, and a later run sends the rest."""
    readers = 150
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.02
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    env = run_env(database_url, sink)
    run = subprocess.Popen(cli("--senders", "3"), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: len(helper_pids(engine, run.pid)) == 2)
        helpers = helper_pids(engine, run.pid)
        assert wait_for(lambda: len(handler.received) >= 3)
        os.killpg(run.pid, signal.SIGINT)
        run.communicate(timeout=60)
        assert wait_for(lambda: not any(alive(p) for p in helpers), timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    left = {d.id for d in rows(engine) if d.status == DeliveryStatus.sending}
    assert len(rows(engine)) < readers  # planning was stopped
    _resume_and_check(engine, sink, handler, env, tmp_path, readers=readers, left_sending=left)


# --- SQLite: BEGIN IMMEDIATE with our own polling (db.begin_immediate) ----------------


@pytest.fixture
def sqlite_file(tmp_path):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    bootstrap.init_database(engine)
    yield tmp_path / "lock.db", engine
    engine.dispose()


def hold_write_lock(path):
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_ctrl_c_while_waiting_for_the_write_lock_leaves_the_busy_timeout_as_it_was(sqlite_file):
    path, engine = sqlite_file
    holder = hold_write_lock(path)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        with pytest.raises(KeyboardInterrupt):
            db.begin_immediate(raw)
        assert not raw.in_transaction
        assert raw.execute("PRAGMA busy_timeout").fetchone() == (db.SQLITE_BUSY_TIMEOUT_MS,)
    timer.join()
    holder.execute("ROLLBACK")
    # The pooled connection waits as before: a write after the lock is released goes through.
    with db.session_scope(engine) as session:
        session.execute(sa.text("SELECT 1"))


def test_a_write_lock_held_past_the_timeout_fails_as_a_database_error(sqlite_file, monkeypatch):
    """Every caller of a session (the recorder's retries, the lease keeper,
    pauses, heartbeats) catches SQLAlchemy's errors: "database is locked"
    from BEGIN IMMEDIATE must be one, as it was when SQLite's own busy
    handler waited, not a bare sqlite3 error that slips past all of them."""
    path, engine = sqlite_file
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)  # not 30 s in a test
    holder = hold_write_lock(path)
    try:
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with db.session_scope(engine) as session:
                session.execute(sa.text("SELECT 1"))
        # The lease keeper, for one, says so and tries again at its next round.
        keeper = leases.LeaseKeeper(engine, lease=timedelta(seconds=60), clock=lambda: datetime.now(timezone.utc))
        keeper.hold([Claimed(id=1, subscriber_id=1, window_key="k", sitrep_ids=(1,), attempts=1, receipt=None)])
        assert keeper.renew() == set()
    finally:
        holder.execute("ROLLBACK")


# --- digests (the planner's writer thread) and a FLASH, with helpers sending meanwhile ------

DIGEST_NOW = "2026-11-27T09:00:00+00:00"  # a day after APPROVED: every daily reader's 08:00 window is due


def seed_digests_and_flash(engine, readers: int) -> tuple[int, int]:
    """``readers`` daily (08:00 UTC) readers of everything; one SITREP approved
    as usual, then one as a FLASH: each reader should get the FLASH once and
    a digest of the other one only."""
    with db.session_scope(engine) as session:
        usual = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed").sitrep
        flash = sitreps.import_parsed(session, parse((FIXTURES / "star_bullets_wrapped.txt").read_text()),
                                      actor="ed").sitrep
        for n in range(readers):
            s = subscribers.add_subscriber(session, f"reader{n}@example.org", kind=SubscriberKind.email,
                                           prefs=Preferences(cadence="daily", send_at="08:00", timezone="UTC"))
            s.created_at = APPROVED - timedelta(days=3)
        sitreps.approve_sitrep(session, usual.id, by="chief", at=APPROVED)
        sitreps.approve_sitrep(session, flash.id, by="chief", at=APPROVED + timedelta(minutes=1), flash=True)
        return usual.id, flash.id


def test_digests_and_a_flash_planned_while_helpers_send_reach_each_reader_once(engine, database_url, tmp_path):
    readers = 150
    usual, flash = seed_digests_and_flash(engine, readers)
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.005
    try:
        done = subprocess.run(cli("--senders", "4", "--now", DIGEST_NOW), env=run_env(database_url, sink),
                              cwd=tmp_path, capture_output=True, text=True, timeout=180)
    finally:
        sink.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["senders"] == 4 and summary["outcomes"] == {"sent": 2 * readers}
    final = rows(engine)
    flashes = [d for d in final if digest.is_flash(d.window_key)]
    digests = [d for d in final if not digest.is_flash(d.window_key)]
    assert len({d.subscriber_id for d in flashes}) == len(flashes) == readers
    assert len({d.subscriber_id for d in digests}) == len(digests) == readers
    assert {tuple(d.sitrep_ids) for d in digests} == {(usual,)}  # the FLASH left out of every digest
    got = received(handler)
    assert set(got) == {d.receipt for d in final} and set(got.values()) == {1}


CRASH_WITH_A_BIG_WAL = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE t (x BLOB)")
for _ in range(12):
    c.execute("BEGIN"); c.executemany("INSERT INTO t VALUES (randomblob(4000))", [()] * 2000); c.execute("COMMIT")
os.kill(os.getpid(), 9)  # no checkpoint, no clean close: the next connection recovers the WAL
"""


def test_writers_wait_while_another_connection_recovers_the_wal(tmp_path):
    """After a crash, the first connection rebuilds the WAL index and the
    others get SQLITE_BUSY_RECOVERY, an extended code of SQLITE_BUSY:
    SQLite's own busy handler waits it out, and so must ours."""
    path = tmp_path / "crashed.db"
    subprocess.run([sys.executable, "-c", CRASH_WITH_A_BIG_WAL, str(path)], timeout=120)
    assert (tmp_path / "crashed.db-wal").stat().st_size > 50_000_000
    (tmp_path / "crashed.db-shm").unlink(missing_ok=True)
    go, results = threading.Barrier(4), []

    def write():
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        go.wait()
        try:
            db.begin_immediate(connection)
            connection.execute("ROLLBACK")
            results.append("began")
        except sqlite3.OperationalError as exc:
            results.append(f"{exc} ({exc.sqlite_errorname})")
        finally:
            connection.close()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == ["began"] * 4


# --- claims that shrink at the end of a pass (ledger.claim share_tail) ---------------------


@pytest.mark.parametrize("limit", [7, 25, 200])
def test_tail_claims_by_many_threads_take_every_digest_and_flash_once_and_nothing_else(engine, limit):
    t0 = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
    with db.session_scope(engine) as session:
        reader = Subscriber(address="r@example.org")
        session.add(reader)
        session.flush()
        reader = reader.id

    def windows(prefix, n):
        return [Window(key=f"{prefix}{i}", start=t0, end=t0, sitrep_ids=(1,)) for i in range(n)]

    with db.session_scope(engine) as session:
        ledger.plan(session, reader, windows("daily:", 333) + windows(digest.FLASH_PREFIX, 41), now=t0)
        ledger.plan(session, reader, windows(ledger.NOTICE_PREFIX, 20) + windows(ledger.REVISION_PREFIXES[0], 20),
                    now=t0)
        # Due later (a retry's backoff): not due now, in the count or the claims.
        ledger.plan(session, reader, windows("weekly:", 15), now=t0 + timedelta(hours=1))
    taken, sizes, lock = [], [], threading.Lock()

    def worker():
        while True:
            with db.session_scope(engine) as session:
                claimed = ledger.claim(session, now=t0, limit=limit, share_tail=True)
            if not claimed:
                return
            with lock:
                taken.extend(c.window_key for c in claimed)
                sizes.append(len(claimed))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(taken) == len(set(taken)) == 333 + 41
    assert all(k.startswith(("daily:", digest.FLASH_PREFIX)) for k in taken)
    assert 0 < min(sizes) and max(sizes) <= limit


def test_digest_planning_that_fails_half_way_keeps_what_was_written_and_a_later_run_finishes(engine, database_url,
                                                                                             tmp_path):
    """As above, in the digest planner, whose batches are written by a thread of their own."""
    readers = 150
    usual, flash = seed_digests_and_flash(engine, readers)
    with engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT id FROM subscriber ORDER BY id")).scalars().all()
    _refuse_deliveries_for(engine, ids[100], flash_too=False)
    sink, handler = scripted_smtp(tmp_path / "mail")
    env = run_env(database_url, sink)
    failed = subprocess.run(cli("--senders", "3", "--now", DIGEST_NOW), env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode != 0 and "refused by the test" in failed.stderr
    first = rows(engine)
    assert {d.status for d in first} == {DeliveryStatus.sent}
    assert len([d for d in first if digest.is_flash(d.window_key)]) == readers
    assert len([d for d in first if not digest.is_flash(d.window_key)]) == 70  # three batches: 10, 20, 40
    _allow_deliveries(engine)
    resumed = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--json", "--senders", "3",
                              "--now", DIGEST_NOW], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    sink.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = rows(engine)
    digests = [d for d in final if not digest.is_flash(d.window_key)]
    assert len(final) == 2 * readers and {d.status for d in final} == {DeliveryStatus.sent}
    assert len({d.subscriber_id for d in digests}) == readers and {tuple(d.sitrep_ids) for d in digests} == {(usual,)}
    got = received(handler)
    assert set(got) == {d.receipt for d in final} and set(got.values()) == {1}


def test_two_passes_at_once_on_postgresql_send_each_delivery_once(postgres_url, tmp_path):
    """Scale-out: two `run --once --senders 3` at the same time; one plans
    (the advisory lock), the other's helpers only send. Each delivery once."""
    engine = db.create_engine(postgres_url)
    bootstrap.init_database(engine)
    readers = 150
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.005
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    env = run_env(postgres_url, sink)
    try:
        runs = [subprocess.Popen(cli("--senders", "3"), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
        ended = [run.communicate(timeout=180) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
        sink.stop()
    for run, (_, stderr) in zip(runs, ended):
        assert run.returncode == 0, stderr[-3000:]
    assert sum(json.loads(out)["planned"] for out, _ in ended) == readers
    assert sum(json.loads(out)["outcomes"].get("sent", 0) for out, _ in ended) == readers
    final = rows(engine)
    assert len(final) == readers and {d.status for d in final} == {DeliveryStatus.sent}
    got = received(handler)
    assert set(got) == {d.receipt for d in final} and set(got.values()) == {1}
    engine.dispose()
