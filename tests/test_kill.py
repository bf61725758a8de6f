"""A `dispatch run` process killed with SIGKILL in the middle of a batch:
after a restart every delivery is sent, none is lost, and only messages that
were sent but not yet recorded at the kill may arrive twice (told apart by
their deterministic Message-IDs)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from dispatch import bootstrap, db, mime, sitreps, subscribers
from dispatch.models import Delivery, DeliveryStatus
from dispatch.sender import RECORD_EVERY
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .servers import scripted_smtp

READERS = 40


@pytest.fixture(params=[1, 3], ids=["one-sender", "three-senders"])
def senders(request):
    return request.param


@pytest.fixture
def setup(tmp_path, sqlite_url, senders):
    """READERS immediate readers and one approved SITREP; a slow SMTP sink;
    the environment for a `dispatch run` child with one sender thread in
    each of its ``senders`` sender processes (--senders)."""
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.05
    engine = db.create_engine(sqlite_url)
    bootstrap.init_database(engine)
    with db.session_scope(engine) as session:
        result = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
        for n in range(READERS):
            s = subscribers.add_subscriber(session, f"reader{n}@example.org", prefs=Preferences(cadence="immediate"))
            s.created_at = datetime.now(timezone.utc) - timedelta(days=1)
        sitreps.approve_sitrep(session, result.sitrep.id, by="ed")
    env = {**os.environ, "DISPATCH_DATABASE_URL": sqlite_url, "DISPATCH_SMTP_HOST": sink.host,
           "DISPATCH_SMTP_PORT": str(sink.port), "DISPATCH_MAIL_FROM": "news@example.org",
           "DISPATCH_SENDER_THREADS": "1", "DISPATCH_BATCH_SIZE": "10", "DISPATCH_PLAN_INTERVAL": "1",
           "DISPATCH_SENDERS": str(senders)}
    yield engine, sink, handler, env
    sink.stop()
    engine.dispose()


def test_sigkill_mid_batch_then_resume(tmp_path, setup, senders):
    engine, sink, handler, env = setup
    child = subprocess.Popen([sys.executable, "-m", "dispatch", "run"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(handler.received) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(handler.received) >= 12, child.stderr.read1().decode() if child.poll() is not None else ""
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    time.sleep(0.3)  # let the sink finish a message that was already on the wire

    with db.session_scope(engine) as session:
        rows = session.exec(select(Delivery)).all()
        in_flight = {d.id for d in rows if d.status == DeliveryStatus.sending}
        sent_before = {d.id for d in rows if d.status == DeliveryStatus.sent}
    assert len(rows) == READERS  # every delivery is in the ledger, each once
    assert sent_before and len(sent_before) < READERS  # killed mid-run
    # One process: killed mid-batch. With helpers, only the parent was killed
    # (each helper, told by SIGTERM when its parent died, released its claim),
    # and the parent may have been between two claims.
    assert in_flight or senders > 1

    # Restart once the leases have run out: the rest goes out.
    later = (datetime.now(timezone.utc) + timedelta(minutes=6)).isoformat()
    resumed = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--now", later], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    sink.stop()
    assert resumed.returncode == 0, resumed.stderr
    with db.session_scope(engine) as session:
        rows = session.exec(select(Delivery)).all()
    assert {d.status for d in rows} == {DeliveryStatus.sent}
    assert len(rows) == READERS
    received = Counter(message_id for _, message_id in handler.received)
    assert set(received) == {d.receipt for d in rows}  # none lost
    doubled = {mid for mid, n in received.items() if n > 1}
    installation = bootstrap.installation_id(engine)
    assert doubled <= {f"<delivery-{i}.{mime.delivery_tag(installation, i)}@example.org>" for i in in_flight}  # only what was in flight
    # One sender thread: at most the run of messages it had sent but not yet recorded.
    assert len(doubled) <= RECORD_EVERY
    assert {mid for d in rows if d.id in sent_before for mid in [d.receipt]}.isdisjoint(doubled)


def test_sigterm_finishes_the_message_in_flight_and_releases_the_rest(tmp_path, setup):
    engine, sink, handler, env = setup
    child = subprocess.Popen([sys.executable, "-m", "dispatch", "run"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(handler.received) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    try:
        stderr = child.communicate(timeout=30)[1]
    finally:
        if child.poll() is None:
            child.kill()
    sink.stop()
    assert child.returncode == 0, stderr
    assert "stopped cleanly" in stderr
    with db.session_scope(engine) as session:
        rows = session.exec(select(Delivery)).all()
    assert DeliveryStatus.sending not in {d.status for d in rows}  # nothing left half-recorded
    sent = {d.receipt for d in rows if d.status == DeliveryStatus.sent}
    assert sent == {mid for _, mid in handler.received}  # what arrived is exactly what is recorded
    assert 5 <= len(sent) < READERS
    log_lines = [line for line in stderr.splitlines() if "outcome=sent" in line]
    assert len(log_lines) == len(sent) and "channel=email" in log_lines[0] and "receipt=<delivery-" in log_lines[0]


def test_a_second_run_on_one_sqlite_file_is_refused(tmp_path, setup, senders):
    engine, sink, handler, env = setup
    first = subprocess.Popen([sys.executable, "-m", "dispatch", "run"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not handler.received and time.monotonic() < deadline:
            time.sleep(0.02)
        second = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr and "one `dispatch run` runs at a time" in second.stderr
        status = subprocess.run([sys.executable, "-m", "dispatch", "status", "--json"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        shown = json.loads(status.stdout)
        # The run's own process plans and sends; its helpers only send.
        assert sorted(w["role"] for w in shown["workers"]) == ["all"] + ["sender"] * (senders - 1)
        assert shown["planner_leader"].endswith(f":{first.pid}")
        assert sum(shown["deliveries"].values()) == READERS
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
