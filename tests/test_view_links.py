"""An email's "view in browser" link (/view/<token>) has a bounded
lifetime (DISPATCH_VIEW_LINK_DAYS after the email was sent) and, like a
reader's feed and cookie, ends with the subscription."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlmodel import select

from dispatch import db, signup
from dispatch.config import Settings
from dispatch.models import Delivery, Subscriber
from dispatch.web.archive import view_expired

from .test_archive import client, deliver, email_links, seed, settings_for, smtp  # noqa: F401 - the fixture


def _view_url(settings, engine, smtp) -> str:
    seed(engine)
    (url,) = [u for u in email_links(deliver(settings, engine, smtp[1])) if "/view/" in u]
    return url


def _sent_days_ago(engine, days: float) -> None:
    with db.session_scope(engine) as session:
        delivery = session.exec(select(Delivery)).one()
        delivery.sent_at = datetime.now(timezone.utc) - timedelta(days=days)


def test_a_view_link_expires_after_the_configured_days(database_url, engine, smtp):
    settings = settings_for(database_url, smtp, view_link_days=30)
    url = _view_url(settings, engine, smtp)
    with client(settings, engine) as web:
        _sent_days_ago(engine, 29)
        assert web.get(url).status_code == 200
        _sent_days_ago(engine, 31)
        expired = web.get(url)
        assert expired.status_code == 410 and "30 days" in expired.text
        assert "dispatch_reader" not in expired.headers.get("set-cookie", "")


def test_the_default_lifetime_is_ninety_days(database_url, engine, smtp):
    assert Settings().view_link_days == 90
    settings = settings_for(database_url, smtp, view_link_days=90)
    url = _view_url(settings, engine, smtp)
    with client(settings, engine) as web:
        _sent_days_ago(engine, 91)
        assert web.get(url).status_code == 410


def test_a_view_link_ends_with_the_subscription(database_url, engine, smtp):
    settings = settings_for(database_url, smtp)
    url = _view_url(settings, engine, smtp)
    with client(settings, engine) as web:
        assert web.get(url).status_code == 200
        with db.session_scope(engine) as session:
            signup.unsubscribe(session, session.exec(select(Subscriber)).one(), how="test")
        assert web.get(url).status_code == 404
        with db.session_scope(engine) as session:
            session.delete(session.exec(select(Subscriber)).one())
        assert web.get(url).status_code == 404


def test_expiry_is_measured_from_the_send_naive_or_aware():
    now = datetime(2026, 12, 3, tzinfo=timezone.utc)
    assert not view_expired(now - timedelta(days=90), now=now, days=90)
    assert view_expired(now - timedelta(days=90, seconds=1), now=now, days=90)
    assert view_expired(datetime(2026, 1, 1), now=now, days=90)  # naive UTC from SQLite
