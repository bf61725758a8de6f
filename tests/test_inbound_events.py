"""Stored events and what they do to the reader (dispatch.inbound.events),
on SQLite and PostgreSQL."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from dispatch import db, signup, subscribers
from dispatch.errors import WorkflowError
from dispatch.inbound import events
from dispatch.inbound.outcomes import Kind
from dispatch.models import Delivery, DeliveryEvent, SubscriberChange, SubscriberStatus
from dispatch.subscribers import Preferences

NOW = datetime(2026, 12, 3, 10, tzinfo=timezone.utc)


def reader_with_delivery(engine, address="reader@example.org"):
    with db.session_scope(engine) as session:
        s = subscribers.add_subscriber(session, address, prefs=Preferences())
        session.add(Delivery(subscriber_id=s.id, window_key="daily:2026-12-02", sitrep_ids=[1]))
        session.flush()
        return s.id, session.exec(select(Delivery.id).where(Delivery.subscriber_id == s.id)).one()


def record(engine, report):
    with db.session_scope(engine) as session:
        return events.record(session, report, now=NOW, soft_limit=3)


def status_of(engine, subscriber_id):
    with db.session_scope(engine) as session:
        s = subscribers.get(session, subscriber_id)
        return s.status, s.status_reason


def test_a_hard_bounce_marks_bounced_and_is_stored_and_in_the_history(engine):
    sid, did = reader_with_delivery(engine)
    done = record(engine, events.Report(Kind.hard_bounce, "smtp", delivery_id=did, status="5.1.1",
                                        diagnostic="550 5.1.1 <reader@example.org>: no such user\r\nX-Evil: 1",
                                        event_key="<dsn-1@mx.example.net>"))
    assert not done.duplicate and done.subscriber_id == sid
    status, reason = status_of(engine, sid)
    assert status == SubscriberStatus.bounced and "5.1.1" in reason
    with db.session_scope(engine) as session:
        (event,) = events.for_delivery(session, did)
        assert (event.kind, event.status_code, event.source) == ("hard_bounce", "5.1.1", "smtp")
        assert "\n" not in event.diagnostic
        changes = session.exec(select(SubscriberChange).where(SubscriberChange.subscriber_id == sid)).all()
        assert changes[-1].to_status == "bounced"
    again = record(engine, events.Report(Kind.hard_bounce, "smtp", delivery_id=did, status="5.1.1",
                                         event_key="<dsn-1@mx.example.net>"))
    assert again.duplicate
    with db.session_scope(engine) as session:
        assert len(session.exec(select(DeliveryEvent)).all()) == 1


def test_soft_bounces_accumulate_with_decay(engine):
    sid, did = reader_with_delivery(engine)
    with db.session_scope(engine) as session:
        for day in range(4):
            events.record(session, events.Report(Kind.soft_bounce, "stdin", delivery_id=did, status="4.2.2",
                                                 event_key=f"k{day}"),
                          now=NOW + timedelta(days=day), soft_limit=3)
            session.flush()
    status, reason = status_of(engine, sid)
    assert status == SubscriberStatus.bounced and "soft bounces" in reason


def test_a_complaint_unsubscribes_and_suppresses_sign_ups(engine):
    sid, did = reader_with_delivery(engine)
    record(engine, events.Report(Kind.complaint, "ses", delivery_id=did, event_key="feedback-1"))
    assert status_of(engine, sid) == (SubscriberStatus.unsubscribed, "complaint")
    with db.session_scope(engine) as session:
        result = signup.request_subscription(session, "reader@example.org", Preferences())
        assert result.next_step == signup.NextStep.nothing  # a stranger's sign-up sends nothing
        with pytest.raises(WorkflowError):
            subscribers.edit_subscriber(session, sid, Preferences(), status=SubscriberStatus.active)
        subscribers.edit_subscriber(session, sid, Preferences(), status=SubscriberStatus.active, force=True)
    assert status_of(engine, sid)[0] == SubscriberStatus.active


def test_a_bounced_reader_needs_force_to_be_made_active(engine):
    sid, did = reader_with_delivery(engine)
    record(engine, events.Report(Kind.hard_bounce, "smtp", delivery_id=did, status="5.1.1"))
    with db.session_scope(engine) as session:
        assert signup.request_subscription(session, "reader@example.org", Preferences()).next_step \
            == signup.NextStep.nothing
        with pytest.raises(WorkflowError, match="--force"):
            subscribers.edit_subscriber(session, sid, Preferences(), status=SubscriberStatus.active)


def test_unattributable_reports_write_nothing(engine):
    sid, did = reader_with_delivery(engine)
    other, _ = reader_with_delivery(engine, "other@example.org")
    for report in (events.Report(Kind.hard_bounce, "smtp", delivery_id=did + 1000, status="5.1.1"),
                   events.Report(Kind.hard_bounce, "smtp", delivery_id=did, subscriber_id=other, status="5.1.1"),
                   events.Report(Kind.complaint, "smtp")):
        with pytest.raises(events.Unattributable):
            record(engine, report)
    with db.session_scope(engine) as session:
        assert session.exec(select(DeliveryEvent)).all() == []
    assert status_of(engine, sid)[0] == SubscriberStatus.active


def test_counts_per_day_and_pages(engine):
    sid, did = reader_with_delivery(engine)
    with db.session_scope(engine) as session:
        for n in range(5):
            events.record(session, events.Report(Kind.soft_bounce, "smtp", delivery_id=did, status="4.4.1",
                                                 event_key=f"e{n}"), now=NOW + timedelta(days=n % 2), soft_limit=50)
    with db.session_scope(engine) as session:
        counts = events.counts_per_day(session, since=NOW - timedelta(days=1), until=NOW + timedelta(days=3))
        assert counts == {NOW.date(): {"soft_bounce": 3}, (NOW + timedelta(days=1)).date(): {"soft_bounce": 2}}
        first = events.page(session, limit=2)
        assert [e.event_key for e in first.items] == ["e4", "e3"] and first.next is not None
        second = events.page(session, limit=2, after=first.next)
        assert [e.event_key for e in second.items] == ["e2", "e1"]
