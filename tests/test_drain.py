"""The sending pool keeps every thread working while work may still come:
a thread that finds nothing waits and looks again while others are busy
or planning is under way, instead of leaving the rest of the run to them."""

import logging
import threading
import time
from datetime import timedelta

import sqlalchemy as sa
from pydantic import SecretStr

from dispatch import db
from dispatch.config import Settings
from dispatch.models import Delivery, DeliveryStatus
from dispatch.scheduler import Runner

from .deliverytools import LATER, Clock, received, rows, seed
from .servers import scripted_smtp

THREADS = 4


def make_runner(database_url, engine, sink, clock):
    settings = Settings(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port,
                        mail_from="news@example.org", secret_key=SecretStr("k"), sender_threads=THREADS,
                        batch_size=3, smtp_pool_size=THREADS)
    return Runner(settings, engine, clock=clock)


def sender_threads(caplog) -> set[str]:
    return {r.threadName for r in caplog.records if "outcome=sent" in r.getMessage()}


def test_idle_threads_take_work_that_becomes_due_while_others_are_busy(engine, database_url, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dispatch.delivery")
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.1
    seed(engine, [f"reader{n}@example.org" for n in range(30)])
    clock = Clock(LATER)
    runner = make_runner(database_url, engine, sink, clock)
    try:
        runner.plan()
        # Two batches are due now; the other 24 rows a few seconds later
        # (as if planning committed them just after this tick began).
        with db.session_scope(engine) as session:
            later = [d.id for d in rows(engine)][6:]
            session.execute(sa.update(Delivery).where(Delivery.id.in_(later))
                            .values(next_attempt_at=LATER + timedelta(seconds=5)))
        drained = []
        pool = threading.Thread(target=lambda: drained.extend(runner.drain()))
        pool.start()
        time.sleep(0.3)  # two threads are sending their batch of 3; two found nothing
        clock.now += timedelta(seconds=5)
        pool.join(60)
        assert not pool.is_alive()
    finally:
        runner.close()
        sink.stop()
    assert len(drained) == 30 and {d.status for d in rows(engine)} == {DeliveryStatus.sent}
    assert sorted(received(handler).values()) == [1] * 30
    assert len(sender_threads(caplog)) == THREADS  # every thread took part


def test_threads_wait_for_a_planning_run_under_way(engine, database_url, tmp_path):
    sink, handler = scripted_smtp(tmp_path / "mail")
    seed(engine, [f"reader{n}@example.org" for n in range(5)])
    runner = make_runner(database_url, engine, sink, Clock(LATER))
    try:
        runner.planning.set()  # a planning run has begun and not committed yet
        drained = []
        pool = threading.Thread(target=lambda: drained.extend(runner.drain()))
        pool.start()
        time.sleep(1.0)
        assert pool.is_alive()  # nothing due yet, but the threads wait for the planner
        runner.plan()  # commits, and tells the waiting threads
        pool.join(30)
        assert not pool.is_alive()
    finally:
        runner.close()
        sink.stop()
    assert [o.status for o in drained] == ["sent"] * 5


def test_the_pool_ends_when_every_thread_is_idle_and_nothing_is_due(engine, database_url, tmp_path):
    sink, _ = scripted_smtp(tmp_path / "mail")
    runner = make_runner(database_url, engine, sink, Clock(LATER))
    try:
        started = time.monotonic()
        assert runner.drain() == []
        assert time.monotonic() - started < 5
    finally:
        runner.close()
        sink.stop()
