"""Recording a run of outcomes: without a session when nothing in it needs
the ORM, through one when a subscriber effect or a webhook's delivery
events do; the same rows either way, on SQLite and PostgreSQL."""

from datetime import datetime, timezone

from sqlmodel import select

from dispatch import db, ledger, recording
from dispatch.digest import Window
from dispatch.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, EventWebhook, Subscriber

T0 = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)


def claimed_runs(engine, count: int) -> list[ledger.Claimed]:
    with db.session_scope(engine) as session:
        ids = []
        for n in range(count):
            s = Subscriber(address=f"r{n}@example.org")
            session.add(s)
            session.flush()
            ids.append(s.id)
        ledger.plan_many(session, [(i, Window(key="daily:x", start=T0, end=T0, sitrep_ids=(1,))) for i in ids], now=T0)
    with db.session_scope(engine) as session:
        return ledger.claim(session, now=T0, limit=count)


def written(engine):
    with db.session_scope(engine) as session:
        deliveries = {d.id: (d.status, d.receipt) for d in session.exec(select(Delivery)).all()
                      if d.window_key == "daily:x"}
        attempts = sorted((a.delivery_id, a.outcome) for a in session.exec(select(DeliveryAttempt)).all())
        events = sorted(e.type for e in session.exec(select(Event)).all())
    return deliveries, attempts, events


def finishes(claimed):
    return [(ledger.sent(c, receipt=f"<m{c.id}@x>", now=T0), None) for c in claimed[:-1]] + [
        (ledger.failed(claimed[-1], error="550 no such user", now=T0), None)]


def test_a_run_that_needs_no_orm_is_written_without_a_session(engine, monkeypatch):
    claimed = claimed_runs(engine, 3)
    recorder = recording.Recorder(engine, clock=lambda: T0)

    def no_session(_engine):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(db, "session_scope", no_session)
    assert recorder.record(finishes(claimed)) == ["sent", "sent", "failed"]
    monkeypatch.undo()
    deliveries, attempts, events = written(engine)
    assert deliveries == {c.id: (DeliveryStatus.sent, f"<m{c.id}@x>") for c in claimed[:-1]} | {
        claimed[-1].id: (DeliveryStatus.failed, None)}
    assert attempts == sorted([(c.id, "sent") for c in claimed[:-1]] + [(claimed[-1].id, "failed")])
    assert events == []


def test_a_webhook_that_wants_delivery_events_gets_them(engine):
    with db.session_scope(engine) as session:
        session.add(EventWebhook(url="https://hooks.example.org/x", secret="whsec_x",
                                 events=["delivery.sent", "delivery.failed"]))
    claimed = claimed_runs(engine, 3)
    assert recording.Recorder(engine, clock=lambda: T0).record(finishes(claimed)) == ["sent", "sent", "failed"]
    deliveries, attempts, events = written(engine)
    assert {status for status, _ in deliveries.values()} == {DeliveryStatus.sent, DeliveryStatus.failed}
    assert len(attempts) == 3
    assert events == ["delivery.failed", "delivery.sent", "delivery.sent"]


def test_a_subscriber_effect_is_written_in_the_same_run(engine):
    claimed = claimed_runs(engine, 2)
    effects = []

    def effect(session):
        effects.append(session)
        session.get(Subscriber, claimed[0].subscriber_id).status_reason = "bounced here"

    run = [(ledger.failed(claimed[0], error="550", now=T0), effect),
           (ledger.sent(claimed[1], receipt="<m>", now=T0), None)]
    assert recording.Recorder(engine, clock=lambda: T0).record(run) == ["failed", "sent"]
    assert len(effects) == 1
    with db.session_scope(engine) as session:
        assert session.get(Subscriber, claimed[0].subscriber_id).status_reason == "bounced here"
    deliveries, attempts, _ = written(engine)
    assert deliveries[claimed[0].id][0] == DeliveryStatus.failed and deliveries[claimed[1].id][0] == DeliveryStatus.sent
