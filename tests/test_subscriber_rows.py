"""The API's page of subscribers, read with Core selects
(dispatch.subscriber_rows), shows each one as subscribers.as_dict does
— on SQLite and PostgreSQL, with every filter."""

from __future__ import annotations

from dispatch import db, subscriber_rows, subscribers
from dispatch.models import SubscriberKind, SubscriberStatus


def _same(d: dict) -> dict:
    return d | {"regions": sorted(d["regions"]), "analysts": sorted(d["analysts"])}


def test_a_page_of_rows_is_as_dict_of_each_subscriber(engine):
    with db.session_scope(engine) as session:
        subscribers.add_subscriber(session, "plain@example.org")
        subscribers.add_subscriber(session, "full@example.org", prefs=subscribers.Preferences(
            name="Full Name", regions=["europe-eurasia", "americas"], cadence="weekly", weekday="fri",
            send_at="06:30", timezone="Asia/Tokyo", format="text"), status=SubscriberStatus.pending)
        subscribers.add_subscriber(session, "C0123ABCD", kind=SubscriberKind.slack)
    with db.read_scope(engine) as session:
        for filters in ({}, {"status": SubscriberStatus.pending}, {"kind": SubscriberKind.slack},
                        {"region": "americas"}, {"search": "full n"}):
            expected = subscribers.subscriber_page(session, limit=2, **filters)
            got = subscriber_rows.page(session, limit=2, **filters)
            assert [_same(d) for d in got.items] == [_same(subscribers.as_dict(s)) for s in expected.items]
            assert (got.next, got.previous) == (expected.next, expected.previous)
        full = subscriber_rows.page(session, limit=10, search="full@").items[0]
        assert full["regions"] == ["americas", "europe-eurasia"] and full["weekday"] == "friday"
