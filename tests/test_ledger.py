"""The ledger's state machine, on SQLite and PostgreSQL."""

import random
import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from dispatch import db, ledger
from dispatch.digest import Window
from dispatch.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscriber
from dispatch.retry import RetryPolicy

T0 = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)


def window(key, ids=(1,)):
    return Window(key=key, start=T0, end=T0, sitrep_ids=tuple(ids))


@pytest.fixture
def subscriber_id(engine):
    with db.session_scope(engine) as session:
        s = Subscriber(address="r@example.org")
        session.add(s)
        session.flush()
        return s.id


def statuses(engine):
    with db.session_scope(engine) as session:
        return {d.window_key: d.status.value for d in session.exec(select(Delivery)).all()}


def attempt_outcomes(engine):
    with db.session_scope(engine) as session:
        return [a.outcome for a in session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all()]


def test_planning_twice_inserts_nothing_new(engine, subscriber_id):
    with db.session_scope(engine) as session:
        assert ledger.plan(session, subscriber_id, [window("a"), window("b")], now=T0) == 2
    with db.session_scope(engine) as session:
        assert ledger.plan(session, subscriber_id, [window("a"), window("b"), window("c")], now=T0) == 1
    assert statuses(engine) == {"a": "pending", "b": "pending", "c": "pending"}


def test_claim_lease_and_finish(engine, subscriber_id):
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window("a", (3, 4)), window("b"), window("c")], now=T0)
    with db.session_scope(engine) as session:
        claimed = ledger.claim(session, now=T0, limit=2)
    assert [(c.window_key, c.sitrep_ids, c.attempts) for c in claimed] == [("a", (3, 4), 1), ("b", (1,), 1)]
    with db.session_scope(engine) as session:
        assert ledger.claim(session, now=T0, limit=5)[0].window_key == "c"  # claimed rows are not handed out twice
        assert ledger.claim(session, now=T0, limit=5) == []
    with db.session_scope(engine) as session:
        assert ledger.mark_sent(session, claimed[0], receipt="<m1@x>", now=T0)
        ledger.mark_skipped(session, claimed[1], reason="withdrawn", now=T0)
    assert statuses(engine) == {"a": "sent", "b": "skipped", "c": "sending"}
    assert attempt_outcomes(engine) == ["sent", "skipped"]


def test_retry_backs_off_then_fails_when_exhausted(engine, subscriber_id):
    policy = RetryPolicy(max_attempts=2, base=timedelta(minutes=1))
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window("a")], now=T0)
    with db.session_scope(engine) as session:
        (c,) = ledger.claim(session, now=T0, limit=1)
        status = ledger.mark_retry(session, c, error="451 later", now=T0, policy=policy, retry_after=90,
                                   rng=random.Random(1))
    assert status == DeliveryStatus.pending
    with db.session_scope(engine) as session:
        assert ledger.claim(session, now=T0 + timedelta(seconds=89), limit=1) == []  # Retry-After honoured
        (c,) = ledger.claim(session, now=T0 + timedelta(seconds=90), limit=1)
        assert c.attempts == 2
        assert ledger.mark_retry(session, c, error="451 again", now=T0, policy=policy) == DeliveryStatus.failed
    with db.session_scope(engine) as session:
        d = session.exec(select(Delivery)).one()
        assert (d.status, d.last_error) == (DeliveryStatus.failed, "451 again")
    assert attempt_outcomes(engine) == ["retry", "failed"]


def test_expired_lease_is_reclaimed_and_the_old_claim_cannot_finish(engine, subscriber_id):
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window("a")], now=T0)
    with db.session_scope(engine) as session:
        (stale,) = ledger.claim(session, now=T0, limit=1, lease=timedelta(minutes=5))
    with db.session_scope(engine) as session:
        assert ledger.reclaim_expired(session, now=T0 + timedelta(minutes=4)) == 0
        assert ledger.reclaim_expired(session, now=T0 + timedelta(minutes=6)) == 1
    with db.session_scope(engine) as session:
        (fresh,) = ledger.claim(session, now=T0 + timedelta(minutes=6), limit=1)
        assert fresh.attempts == 2
    with db.session_scope(engine) as session:
        ledger.mark_retry(session, stale, error="late", now=T0, policy=RetryPolicy())
    with db.session_scope(engine) as session:  # the stale retry did not put the row back in the queue
        assert session.exec(select(Delivery)).one().status == DeliveryStatus.sending
        assert ledger.mark_sent(session, fresh, receipt="<m@x>", now=T0)
    with db.session_scope(engine) as session:
        assert not ledger.mark_sent(session, stale, receipt="<dup@x>", now=T0)  # the stale claim changes nothing
    with db.session_scope(engine) as session:
        d = session.exec(select(Delivery)).one()
        assert (d.status, d.receipt) == (DeliveryStatus.sent, "<m@x>")
    outcomes = attempt_outcomes(engine)
    assert outcomes == ["reclaimed", "retry", "sent", "sent"]  # every report is kept in the log


def test_release_gives_back_the_attempt(engine, subscriber_id):
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window("a"), window("b")], now=T0)
    with db.session_scope(engine) as session:
        claimed = ledger.claim(session, now=T0, limit=2)
        ledger.release(session, claimed, now=T0)
    with db.session_scope(engine) as session:
        rows = session.exec(select(Delivery)).all()
        assert {(d.status, d.attempts) for d in rows} == {(DeliveryStatus.pending, 0)}


def test_retry_failed_requeues(engine, subscriber_id):
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window("a"), window("b")], now=T0)
    with db.session_scope(engine) as session:
        for c in ledger.claim(session, now=T0, limit=2):
            ledger.mark_failed(session, c, error="550 no such user", now=T0)
    with db.session_scope(engine) as session:
        assert len(ledger.retry_failed(session, now=T0)) == 2
    assert set(statuses(engine).values()) == {"pending"}


def test_concurrent_claims_never_share_a_row(engine, subscriber_id):
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window(f"w{n}") for n in range(200)], now=T0)
    taken: list[int] = []
    lock = threading.Lock()

    def worker():
        while True:
            with db.session_scope(engine) as session:
                claimed = ledger.claim(session, now=T0, limit=7)
            if not claimed:
                return
            with lock:
                taken.extend(c.id for c in claimed)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == len(set(taken)) == 200


def test_prepared_executemany_sends_what_sqlalchemy_sends(engine, subscriber_id):
    """ledger._Prepared hands the driver the same SQL and the same parameter
    rows as SQLAlchemy's own executemany of the statement: values through
    their types (aware instants as each backend stores them, None, enums'
    strings) and the statement's literals in place."""
    import sqlalchemy as sa

    later = T0 + timedelta(hours=3, microseconds=17)
    params = [{"b_id": 1, "b_claim": 1, "b_status": "sent", "b_receipt": "<m@x>", "b_error": None, "b_next": T0,
               "b_sent_at": T0, "b_attempts": 1},
              {"b_id": 2, "b_claim": 2, "b_status": "pending", "b_receipt": None, "b_error": "é" * 3,
               "b_next": later.astimezone(timezone(timedelta(hours=5))), "b_sent_at": None, "b_attempts": 1}]
    sent = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE"):  # not SQLite's BEGIN IMMEDIATE
            sent.append((statement, [tuple(p) if isinstance(p, (list, tuple)) else dict(p) for p in parameters]))

    with engine.connect() as connection:
        sa.event.listen(connection, "before_cursor_execute", capture)
        try:
            with connection.begin() as transaction:
                connection.execute(ledger._FINISH, params)
                ledger._prepared(ledger._FINISH, connection.dialect).executemany(connection, params)
                transaction.rollback()
        finally:
            sa.event.remove(connection, "before_cursor_execute", capture)
    (theirs_sql, theirs), (ours_sql, ours) = sent
    assert ours_sql == theirs_sql
    assert ours == theirs


def test_attempt_rows_written_as_sqlalchemy_writes_them(engine, subscriber_id):
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window("a")], now=T0)
        delivery_id = session.exec(select(Delivery.id)).one()
    rows = [{"delivery_id": delivery_id, "at": T0 + timedelta(microseconds=n), "outcome": "sent", "detail": d}
            for n, d in enumerate(["", "x" * 2000, "déjà"])]
    with db.session_scope(engine) as session:
        session.connection().execute(ledger._ATTEMPT, rows)
        ledger._prepared(ledger._ATTEMPT, session.connection().dialect).executemany(session.connection(), rows)
    with db.session_scope(engine) as session:
        written = [(a.delivery_id, a.at, a.outcome, a.detail)
                   for a in session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all()]
    assert written[:3] == written[3:]
    assert [w[1] for w in written[:3]] == [r["at"] for r in rows]


@given(due=st.integers(0, 100_000), limit=st.integers(1, 1000))
def test_a_tail_claim_is_a_share_of_what_is_left_within_its_limit(due, limit):
    size = ledger.tail_limit(due, limit)
    assert min(limit, ledger.TAIL_FLOOR) <= size <= limit
    if due >= limit * ledger.TAIL_SHARE:
        assert size == limit  # far from the end: whole claims
    elif limit >= ledger.TAIL_FLOOR:
        assert size == max(ledger.TAIL_FLOOR, -(-due // ledger.TAIL_SHARE))


def test_claims_shrink_as_the_queue_runs_out(engine, subscriber_id):
    total = 30 * ledger.TAIL_SHARE * 2
    with db.session_scope(engine) as session:
        ledger.plan(session, subscriber_id, [window(f"daily:{n}") for n in range(total)], now=T0)
        # Notices are not digests: they neither count towards the tail nor are claimed here.
        ledger.plan(session, subscriber_id, [window(f"{ledger.NOTICE_PREFIX}{n}") for n in range(50)], now=T0)
    sizes = []
    while True:
        with db.session_scope(engine) as session:
            claimed = ledger.claim(session, now=T0, limit=30, share_tail=True)
        if not claimed:
            break
        assert all(c.window_key.startswith("daily:") for c in claimed)
        sizes.append(len(claimed))
    assert sum(sizes) == total
    assert sizes[:ledger.TAIL_SHARE] == [30] * ledger.TAIL_SHARE  # whole claims while plenty is due
    assert sizes[-1] < 30 and min(sizes) >= min(ledger.TAIL_FLOOR, sizes[-1])
    assert sizes == sorted(sizes, reverse=True)
    with db.session_scope(engine) as session:  # without share_tail a claim takes what it asks for
        ledger.plan(session, subscriber_id, [window(f"weekly:{n}") for n in range(40)], now=T0)
    with db.session_scope(engine) as session:
        assert len(ledger.claim(session, now=T0, limit=40)) == 40
