"""`dispatch run --senders N`: several sender processes on one machine, on
SQLite and PostgreSQL. Every delivery reaches the SMTP server exactly once
(Message-IDs counted at aiosmtpd), leases are renewed across processes, and
a sender process killed outright leaves its claims to be sent after their
lease runs out, by another run, without a second copy of anything recorded."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from dispatch import bootstrap, mime
from dispatch.models import DeliveryStatus
from dispatch.sender import RECORD_EVERY
from dispatch.sender_processes import helpers_for

from .deliverytools import assert_each_sent_once, outcomes, received, rows, seed
from .servers import scripted_smtp


def run_env(database_url, sink, **extra):
    return {**os.environ, "DISPATCH_DATABASE_URL": database_url, "DISPATCH_SMTP_HOST": sink.host,
            "DISPATCH_SMTP_PORT": str(sink.port), "DISPATCH_MAIL_FROM": "news@example.org",
            "DISPATCH_SECRET_KEY": "k", "DISPATCH_SENDER_THREADS": "1", "DISPATCH_BATCH_SIZE": "5", **extra}


def test_helpers_get_a_whole_batch_each_or_are_not_started():
    assert helpers_for(senders=1, due=10_000, batch_size=50) == 0
    assert helpers_for(senders=4, due=10_000, batch_size=50) == 3
    assert helpers_for(senders=4, due=100, batch_size=50) == 1  # two processes, a batch each
    assert helpers_for(senders=4, due=99, batch_size=50) == 0


@pytest.mark.parametrize("senders", [2, 3])
def test_several_sender_processes_send_every_delivery_exactly_once(engine, database_url, tmp_path, senders):
    readers = 60
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.01
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    try:
        # A lease of two seconds: the run takes longer, so each process must renew its own claims.
        env = run_env(database_url, sink, DISPATCH_LEASE_SECONDS="2")
        done = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--json", "--senders", str(senders)],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    finally:
        sink.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["senders"] == senders and summary["senders_lost"] == 0
    assert summary["outcomes"] == {"sent": readers}
    assert_each_sent_once(engine, handler, readers)
    assert "reclaimed" not in outcomes(engine)  # no lease ran out while its process was alive
    # Each process claimed under a worker of its own; the planner was one.
    with engine.connect() as conn:
        claimers = conn.execute(sa.text("SELECT count(DISTINCT claimed_by) FROM delivery")).scalar()
        workers = conn.execute(sa.text("SELECT count(*) FROM worker")).scalar()
    assert claimers == senders
    assert workers == 0  # every process deregistered itself on the way out
    assert done.stderr.count("planned ") == 1


# `dispatch run` with a slow planner: its first batches small (10, 20, 40
# readers) and each written only after a pause, so a pass plans for well
# over a second. Real parts otherwise: the CLI, the database, the SMTP server.
SLOW_PLANNER = """
import sys, time
from dispatch import planner
planner.FIRST_BATCH = 10
write_batch = planner._write_batch
def slowly(*args, **kwargs):
    time.sleep(0.4)
    return write_batch(*args, **kwargs)
planner._write_batch = slowly
sys.argv[0] = "dispatch"
from dispatch.cli.entry import main
main()
"""


def log_times(stderr: str, marker: str) -> list[datetime]:
    return [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in stderr.splitlines() if marker in line]


def test_helpers_send_each_batch_while_the_parent_still_plans(engine, database_url, tmp_path):
    readers = 70  # planned in batches of 10, 20 and 40, each after a pause
    sink, handler = scripted_smtp(tmp_path / "mail")
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    try:
        done = subprocess.run([sys.executable, "-c", SLOW_PLANNER, "run", "--once", "--json", "--senders", "2"],
                              env=run_env(database_url, sink), cwd=tmp_path, capture_output=True, text=True,
                              timeout=180)
    finally:
        sink.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["senders"] == 2 and summary["outcomes"] == {"sent": readers}
    (planned,) = log_times(done.stderr, "planned 70 deliveries")
    sent = log_times(done.stderr, "outcome=sent")
    assert len(sent) == readers
    # The helper found nothing for its first looks (nothing was written yet)
    # and waited for the planner instead of finishing: it sent a share.
    with engine.connect() as conn:
        claimers = conn.execute(sa.text("SELECT count(DISTINCT claimed_by) FROM delivery")).scalar()
    assert claimers == 2
    # And it sent while the parent was still planning (the last batch is written
    # 0.4 s after the one before): its first messages were recorded before the plan ended.
    assert min(sent) < planned
    got = received(handler)
    assert len(got) == readers and set(got.values()) == {1}


def test_a_killed_sender_process_leaves_its_claims_to_the_next_run(engine, database_url, tmp_path):
    readers = 60
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.05
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    env = run_env(database_url, sink)
    run = subprocess.Popen([sys.executable, "-m", "dispatch", "run", "--once", "--json", "--senders", "3"],
                           env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            with engine.connect() as conn:  # a helper: a sender worker that is not the parent
                names = conn.execute(sa.text("SELECT name FROM worker WHERE role = 'sender'")).scalars().all()
            victim = next((int(n.rsplit(":", 1)[1]) for n in names), None)
            time.sleep(0.02)
        assert victim is not None and victim != run.pid
        while len(handler.received) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    time.sleep(0.3)  # let the sink finish a message that was already on the wire
    assert run.returncode == 1, stderr[-3000:]  # a sender died: the pass says so
    summary = json.loads(stdout)
    assert summary["senders_lost"] == 1 and f"sender process {victim} ended" in stderr
    left = {d.id for d in rows(engine) if d.status == DeliveryStatus.sending}
    assert left and len(left) <= 5  # the killed one's claim (one batch), nothing else
    assert {d.status for d in rows(engine) if d.id not in left} == {DeliveryStatus.sent}

    # Once the leases have run out, the next run reclaims and sends them.
    later = (datetime.now(timezone.utc) + timedelta(minutes=6)).isoformat()
    resumed = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--now", later, "--senders", "3"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    sink.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = rows(engine)
    assert len(final) == readers and {d.status for d in final} == {DeliveryStatus.sent}
    got = received(handler)
    assert set(got) == {d.receipt for d in final}  # none lost
    doubled = {mid for mid, n in got.items() if n > 1}
    installation = bootstrap.installation_id(engine)
    # Only what the killed process had sent but not yet recorded may arrive twice.
    assert doubled <= {f"<delivery-{i}.{mime.delivery_tag(installation, i)}@example.org>" for i in left}
    assert len(doubled) <= min(RECORD_EVERY, 5)
    assert "reclaimed" in outcomes(engine)
