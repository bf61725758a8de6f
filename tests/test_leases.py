"""A live sender keeps its claims: leases are renewed while it works, a
claim is no bigger than fits in one lease, and a message the server
accepted is never sent again because its record came late. On SQLite and
PostgreSQL; the end-to-end tests run `dispatch run`'s loop (planner reclaim
included) against a slow SMTP relay on loopback with a lease of two seconds."""

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr

from dispatch import db, ledger
from dispatch.config import Settings
from dispatch.digest import Window
from dispatch.models import DeliveryStatus, Subscriber
from dispatch.scheduler import Runner

from .deliverytools import outcomes, received, rows, seed
from .servers import scripted_smtp

T0 = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)


def plan_rows(engine, n):
    with db.session_scope(engine) as session:
        s = Subscriber(address="r@example.org")
        session.add(s)
        session.flush()
        ledger.plan(session, s.id, [Window(key=f"w{i}", start=T0, end=T0, sitrep_ids=(1,)) for i in range(n)], now=T0)


def test_claim_size_fits_half_a_lease():
    from dispatch import leases

    size = leases.claim_size
    assert size(batch_size=50, lease_seconds=300) == leases.PROBE_CLAIM  # nothing measured yet: a probe
    assert size(batch_size=50, lease_seconds=300, seconds_each=0.001) == 50  # fast: the batch size
    assert size(batch_size=50, lease_seconds=15, seconds_each=1.0) == 7  # one a second, 15 s lease
    assert size(batch_size=50, lease_seconds=2, seconds_each=30.0) == 1  # never less than one
    # DISPATCH_SMTP_RATE_LIMIT=0.25 shared by 4 threads, default lease: 0.0625/s × 150 s each.
    assert size(batch_size=50, lease_seconds=300, rate_limit=0.25, threads=4) == 9
    assert size(batch_size=50, lease_seconds=300, seconds_each=0.001, rate_limit=0.25, threads=4) == 9
    assert size(batch_size=5, lease_seconds=300, seconds_each=0.0) == 5


def test_send_pace_counts_a_slowdown_at_once_and_a_speedup_gradually():
    from dispatch import leases

    pace = leases.SendPace()
    pace.observe(1.0, 10)
    assert pace.seconds_each == pytest.approx(0.1)
    pace.observe(5.0, 10)
    assert pace.seconds_each == pytest.approx(0.5)
    pace.observe(0.0, 10)
    assert pace.seconds_each == pytest.approx(0.35)


def test_renew_extends_only_the_claims_still_held(engine):
    plan_rows(engine, 3)
    with db.session_scope(engine) as session:
        a, b, c = ledger.claim(session, now=T0, limit=3, lease=LEASE)
    with db.session_scope(engine) as session:  # c finished by its sender; b taken over after expiry
        ledger.mark_sent(session, c, receipt="<c@x>", now=T0)
        ledger.reclaim_expired(session, now=T0 + timedelta(minutes=6))
    with db.session_scope(engine) as session:  # (a's row went back too: claim it as "another sender")
        taken = {x.id: x for x in ledger.claim(session, now=T0 + timedelta(minutes=6), limit=2, lease=LEASE)}
    assert set(taken) == {a.id, b.id}
    with db.session_scope(engine) as session:
        assert ledger.renew(session, [a, b, c], until=T0 + timedelta(minutes=20)) == {a.id, b.id, c.id}
        assert ledger.renew(session, list(taken.values()), until=T0 + timedelta(minutes=20)) == set()
    with db.session_scope(engine) as session:
        assert ledger.reclaim_expired(session, now=T0 + timedelta(minutes=19)) == 0  # renewed: nothing expires
        assert ledger.reclaim_expired(session, now=T0 + timedelta(minutes=21)) == 2


def test_a_late_sent_record_wins_while_the_row_is_open(engine):
    """The server accepted the message, but the claim had been taken back:
    the record still marks it sent, so nobody sends it again."""
    plan_rows(engine, 2)
    with db.session_scope(engine) as session:
        stale_a, stale_b = ledger.claim(session, now=T0, limit=2, lease=LEASE)
    with db.session_scope(engine) as session:
        assert ledger.reclaim_expired(session, now=T0 + timedelta(minutes=6)) == 2
    with db.session_scope(engine) as session:
        (fresh_a,) = ledger.claim(session, now=T0 + timedelta(minutes=6), limit=1, lease=LEASE)  # b stays pending
    with db.session_scope(engine) as session:
        owned = ledger.record(session, [ledger.sent(stale_a, receipt="<a@x>", now=T0),
                                        ledger.sent(stale_b, receipt="<b@x>", now=T0)])
    assert owned == 2
    with db.session_scope(engine) as session:
        assert ledger.renew(session, [fresh_a], until=T0 + timedelta(minutes=9)) == {fresh_a.id}  # its sender skips it
        assert ledger.claim(session, now=T0 + timedelta(hours=1), limit=5) == []  # nothing left to send
        assert not ledger.mark_sent(session, fresh_a, receipt="<a-again@x>", now=T0)
    assert [(d.status, d.receipt) for d in rows(engine)] == [(DeliveryStatus.sent, "<a@x>"),
                                                              (DeliveryStatus.sent, "<b@x>")]
    assert outcomes(engine).count("sent") == 3  # every report is in the log


def test_a_stale_retry_record_still_changes_nothing(engine):
    plan_rows(engine, 1)
    with db.session_scope(engine) as session:
        (stale,) = ledger.claim(session, now=T0, limit=1, lease=LEASE)
        ledger.reclaim_expired(session, now=T0 + timedelta(minutes=6))
    with db.session_scope(engine) as session:
        (fresh,) = ledger.claim(session, now=T0 + timedelta(minutes=6), limit=1, lease=LEASE)
        ledger.mark_failed(session, stale, error="550 late", now=T0)
    assert rows(engine)[0].status == DeliveryStatus.sending and rows(engine)[0].attempts == fresh.attempts


def run_until(runner, condition, *, timeout):
    """`dispatch run`'s loop (plan + send every tick, reclaiming expired
    leases) in a thread, until ``condition()`` or the timeout."""
    thread = threading.Thread(target=runner.run_forever, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            time.sleep(0.1)
        time.sleep(1.5)  # a few more ticks: anything reclaimed would be sent again now
    finally:
        runner.request_stop()
        thread.join(30)


@pytest.mark.parametrize("slow", ["relay", "rate_limit"])
def test_a_slow_sender_keeps_its_claims_and_sends_each_message_once(engine, database_url, tmp_path, monkeypatch,
                                                                    slow):
    readers = 16
    sink, handler = scripted_smtp(tmp_path / "mail")
    if slow == "relay":
        handler.delay = 0.25  # a relay that takes a quarter of a second per message
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    settings = Settings(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port,
                        mail_from="news@example.org", secret_key=SecretStr("k"), lease_seconds=2,
                        plan_interval=0.5, sender_threads=2, batch_size=50,
                        smtp_rate_limit=5 if slow == "rate_limit" else 0)
    claims: list[int] = []
    real_claim = ledger.claim

    def counting_claim(session, **kwargs):  # the real claim; remember each one's size
        got = real_claim(session, **kwargs)
        claims.append(len(got))
        return got

    monkeypatch.setattr(ledger, "claim", counting_claim)
    runner = Runner(settings, engine)
    try:
        # 16 messages at 4–5 a second over two threads: 2 s or more, past the 2 s lease.
        run_until(runner, lambda: sum(received(handler).values()) >= readers
                  and all(d.status == DeliveryStatus.sent for d in rows(engine)), timeout=40)
    finally:
        runner.close()
        sink.stop()
    final = rows(engine)
    assert len(final) == readers and {d.status for d in final} == {DeliveryStatus.sent}
    got = received(handler)
    assert set(got) == {d.receipt for d in final}  # none lost
    assert set(got.values()) == {1}  # none twice
    assert "reclaimed" not in outcomes(engine)  # no lease ran out while its sender was alive
    if slow == "rate_limit":  # 5/s shared by 2 threads, 2 s lease: 2.5 a second each for 1 s
        assert max(claims) <= 2


def test_a_sender_does_not_send_a_claim_found_taken_over(engine, database_url, tmp_path):
    """A process stalled past its lease (here: its keeper finds the claim
    taken over) leaves the rest of its batch to the new holder."""
    from dispatch import leases

    sink, handler = scripted_smtp(tmp_path / "mail")
    seed(engine, ["a@example.org", "b@example.org"])
    settings = Settings(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port,
                        mail_from="news@example.org", secret_key=SecretStr("k"))
    now = T0
    runner = Runner(settings, engine, clock=lambda: now)
    try:
        runner.plan()
        with db.session_scope(engine) as session:
            batch = ledger.claim(session, now=now, limit=2, lease=timedelta(seconds=1))
        with db.session_scope(engine) as session:  # the lease ran out; another sender took the rows
            ledger.reclaim_expired(session, now=now + timedelta(seconds=2))
            other = ledger.claim(session, now=now + timedelta(seconds=2), limit=2)
        keeper = leases.LeaseKeeper(engine, lease=timedelta(minutes=5), clock=lambda: now)
        keeper.hold(batch)
        assert keeper.renew() == {c.id for c in batch}
        assert {o.status for o in runner.sender.process(batch, keeper=keeper)} == {"taken over"}
        assert handler.received == []
        assert {o.status for o in runner.sender.process(other)} == {"sent"}  # the new holder sends them, once
    finally:
        runner.close()
        sink.stop()
    assert sorted(received(handler).values()) == [1, 1]
