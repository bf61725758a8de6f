"""Subscriber self-service through the test client: double opt-in against a
real SMTP sink, signed links, preferences, RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import re
import time

import pytest
from sqlmodel import select

from dispatch import db, ledger, links, subscribers
from dispatch.models import Delivery, DeliveryStatus, Subscriber, SubscriberChange, SubscriberStatus, utcnow

FORM = {"email": "ana@example.org", "name": "Ana", "region": ["europe-eurasia", "americas"], "cadence": "daily",
        "send_at": "06:30", "timezone": "Europe/London", "weekday": "0", "format": "html"}


def stored(web, address="ana@example.org") -> Subscriber:
    with db.session_scope(web.engine) as session:
        subscriber = subscribers.get(session, address)
        _ = subscriber.regions, subscriber.analysts
        return subscriber


def link_in(message, path: str) -> str:
    match = re.search(rf"http://testserver(/{path}/\S+)", message.get_content())
    assert match, message.get_content()
    return match.group(1)


def subscribe(web, **changes):
    return web.form("/subscribe", {**FORM, **changes})


def confirmed(web) -> str:
    """Subscribe and confirm; the preferences path it lands on."""
    subscribe(web)
    response = web.form(link_in(web.mails()[-1], "confirm"), follow_redirects=False)
    assert response.status_code == 303
    return response.headers["location"]


def test_subscribing_keeps_the_reader_pending_until_the_link_is_followed(web):
    response = subscribe(web)
    assert response.status_code == 200 and "Check your inbox" in response.text
    reader = stored(web)
    assert reader.status == SubscriberStatus.pending and reader.confirmed_at is None
    assert sorted(r.slug for r in reader.regions) == ["americas", "europe-eurasia"]
    assert (reader.send_at, reader.timezone) == ("06:30", "Europe/London")
    (mail,) = web.mails()
    assert mail["To"] == "ana@example.org" and "Confirm your subscription" in mail["Subject"]
    confirm_path = link_in(mail, "confirm")
    # Opening the link (as a mail scanner would) confirms nothing: the button does.
    page = web.client.get(confirm_path)
    assert page.status_code == 200 and "Yes, confirm" in page.text
    assert stored(web).status == SubscriberStatus.pending
    response = web.form(confirm_path, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/preferences/")
    reader = stored(web)
    assert reader.status == SubscriberStatus.active and reader.confirmed_at is not None
    assert "Your subscription is confirmed" in web.client.get(response.headers["location"]).text


def test_the_subscribe_form_never_changes_or_reveals_an_existing_subscription(web):
    confirmed(web)
    response = subscribe(web, region=["global"], name="Mallory")
    assert "Check your inbox" in response.text
    reader = stored(web)
    assert reader.name == "Ana" and sorted(r.slug for r in reader.regions) == ["americas", "europe-eurasia"]
    assert reader.status == SubscriberStatus.active
    reminder = web.mails()[-1]
    assert "already subscribed" in reminder.get_content() and "/preferences/" in reminder.get_content()


def test_bad_subscribe_input_is_shown_with_the_form_and_stores_nothing(web):
    response = subscribe(web, email="not an address")
    assert response.status_code == 400 and "not a valid address" in response.text
    response = subscribe(web, timezone="Mars/Olympus")
    assert response.status_code == 400 and "unknown time zone" in response.text
    assert 'value="ana@example.org"' in response.text  # what was typed is kept
    with db.session_scope(web.engine) as session:
        assert session.exec(select(Subscriber)).all() == []
    assert web.mails() == []


def test_a_dead_mail_server_never_holds_the_request_and_the_notice_is_retried(database_url, engine, tmp_path):
    from dispatch.sink import SmtpSink
    from tests.webtools import make_web

    sink = SmtpSink(tmp_path / "mail").start()
    sink.stop()  # nothing listens on its port any more
    harness = make_web(database_url, engine, sink, tmp_path / "mail")
    with harness.client:
        response = harness.form("/subscribe", FORM)
        assert response.status_code == 200 and "Check your inbox" in response.text
        assert stored(harness).status == SubscriberStatus.pending
        # The notice is a delivery: its failed attempt is logged and it waits for its retry.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db.session_scope(engine) as session:
                notice = session.exec(select(Delivery)).one()
                if notice.attempts == 1 and notice.status == DeliveryStatus.pending:
                    break
            time.sleep(0.05)
        assert notice.window_key.startswith("notice:confirm:") and notice.last_error
        with db.session_scope(engine) as session:
            assert [a.outcome for a in ledger.attempts(session, notice.id)] == ["retry"]
            session.get(Delivery, notice.id).next_attempt_at = utcnow()  # its backoff is over
        back = SmtpSink(tmp_path / "mail", port=sink.port).start()  # the relay is back
        try:
            harness.client.app.state.notice_worker.wake()
            (mail,) = harness.mails()
        finally:
            back.stop()
    assert mail["To"] == "ana@example.org" and "Confirm" in mail["Subject"]
    with db.session_scope(engine) as session:
        assert session.get(Delivery, notice.id).status == DeliveryStatus.sent


def test_preferences_change_through_the_signed_link(web):
    path = confirmed(web)
    page = web.client.get(path)
    assert "ana@example.org" in page.text
    response = web.form(path, {"name": "Ana B", "region": ["global"], "cadence": "weekly", "send_at": "08:15",
                               "timezone": "America/New_York", "weekday": "4", "format": "text"},
                        follow_redirects=False)
    assert response.status_code == 303
    reader = stored(web)
    assert [r.slug for r in reader.regions] == ["global"]
    assert (reader.cadence.value, reader.send_at, reader.timezone, reader.weekday, reader.format.value) == (
        "weekly", "08:15", "America/New_York", 4, "text")
    bad = web.form(path, {"region": ["atlantis"], "cadence": "daily", "send_at": "07:00", "timezone": "UTC"})
    assert bad.status_code == 400 and "atlantis" in bad.text
    assert [r.slug for r in stored(web).regions] == ["global"]  # all or nothing


def test_unsubscribe_page_then_resubscribe(web):
    confirmed(web)
    path = link_in(web.mails()[-1], "unsubscribe")  # the link in the confirmation email
    page = web.client.get(path)
    assert page.status_code == 200 and "Unsubscribe" in page.text
    assert stored(web).status == SubscriberStatus.active  # GET changes nothing
    response = web.form(path)
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    assert stored(web).status == SubscriberStatus.unsubscribed
    response = web.form(path.replace("/unsubscribe/", "/resubscribe/"), page=path, follow_redirects=False)
    assert response.status_code == 303
    assert stored(web).status == SubscriberStatus.active


def _unsubscribe_path(web) -> str:
    reader = stored(web)
    return "/unsubscribe/" + links.make_token("web-test-secret", subscriber_id=reader.id, address=reader.address,
                                              purpose="unsubscribe")


def test_one_click_unsubscribe_needs_no_session_or_csrf(web):
    confirmed(web)
    path = _unsubscribe_path(web)
    web.client.cookies.clear()
    response = web.client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert stored(web).status == SubscriberStatus.unsubscribed
    # A second click (providers retry) is just as fine.
    assert web.client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200


def test_a_plain_unsubscribe_post_without_the_form_token_is_refused(web):
    confirmed(web)
    response = web.client.post(_unsubscribe_path(web), data={})
    assert response.status_code == 403
    assert stored(web).status == SubscriberStatus.active


@pytest.mark.parametrize("purpose", ["preferences", "unsubscribe", "confirm"])
def test_tampered_expired_and_foreign_links_show_a_clear_page_and_no_data(web, purpose):
    confirmed(web)
    reader = stored(web)
    good = links.make_token("web-test-secret", subscriber_id=reader.id, address=reader.address, purpose=purpose)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    response = web.client.get(f"/{purpose}/{tampered}")
    assert response.status_code == 400 and "not valid" in response.text and reader.address not in response.text
    old = links.make_token("web-test-secret", subscriber_id=reader.id, address=reader.address, purpose=purpose,
                           now=1_000_000_000)
    response = web.client.get(f"/{purpose}/{old}")
    assert response.status_code == 410 and "expired" in response.text and reader.address not in response.text
    other = "confirm" if purpose != "confirm" else "preferences"
    wrong_purpose = links.make_token("web-test-secret", subscriber_id=reader.id, address=reader.address,
                                     purpose=other)
    assert web.client.get(f"/{purpose}/{wrong_purpose}").status_code == 400
    # A link for a removed subscriber never opens a later one that got the same id.
    stranger = links.make_token("web-test-secret", subscriber_id=reader.id, address="someone@else.org",
                                purpose=purpose)
    response = web.client.get(f"/{purpose}/{stranger}")
    assert response.status_code == 404 and reader.address not in response.text


def test_resubscribing_after_months_does_not_send_the_backlog(web):
    from datetime import datetime, timezone

    confirmed(web)
    reader = stored(web)
    long_ago = datetime(2025, 1, 1, tzinfo=timezone.utc)
    with db.session_scope(web.engine) as session:
        row = session.get(Subscriber, reader.id)
        row.planned_through = long_ago
        row.status = SubscriberStatus.unsubscribed
    path = _unsubscribe_path(web)
    web.form(path.replace("/unsubscribe/", "/resubscribe/"), page=path)
    again = stored(web)
    assert again.status == SubscriberStatus.active and again.planned_through > long_ago


def test_the_home_page_leads_to_the_subscribe_form(web):
    response = web.client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/subscribe"


# --- opt-outs are the reader's (issue 13.10) ------------------------------------------

def _set_status(web, status: SubscriberStatus, reason: str) -> None:
    with db.session_scope(web.engine) as session:
        reader = subscribers.get(session, "ana@example.org")
        reader.status, reader.status_reason = status, reason


@pytest.mark.parametrize("status", [SubscriberStatus.unsubscribed, SubscriberStatus.bounced,
                                    SubscriberStatus.disabled])
def test_a_strangers_sign_up_never_changes_a_closed_subscription(web, status):
    confirmed(web)
    _set_status(web, status, "the reason on record")
    before = len(web.mails())
    response = subscribe(web, name="Mallory")
    assert response.status_code == 200 and "Check your inbox" in response.text  # reads the same as ever
    reader = stored(web)
    assert (reader.status, reader.status_reason, reader.name) == (status, "the reason on record", "Ana")
    mails = web.mails()[before:]
    if status == SubscriberStatus.unsubscribed:
        # The reader may come back, but only through the confirmation sent to their own mailbox.
        (mail,) = mails
        assert "Confirm" in mail["Subject"]
        assert web.form(link_in(mail, "confirm"), follow_redirects=False).status_code == 303
        assert stored(web).status == SubscriberStatus.active and stored(web).opted_out_at is None
    else:
        assert mails == []  # a bounced address is suppressed; an admin's "disabled" is final


def test_unsubscribing_while_disabled_or_bounced_keeps_that_status_and_subscribing_again_lifts_nothing(web):
    confirmed(web)
    path = _unsubscribe_path(web)
    for status in (SubscriberStatus.disabled, SubscriberStatus.bounced):
        _set_status(web, status, "an admin's or the mail system's reason")
        assert web.form(path, page="/subscribe").status_code == 200
        reader = stored(web)
        assert reader.status == status and reader.opted_out_at is not None
        page = web.client.get(path).text
        assert "You are unsubscribed" in page and "Subscribe again" not in page
        refused = web.form(path.replace("/unsubscribe/", "/resubscribe/"), page="/subscribe", follow_redirects=False)
        assert refused.status_code == 409
        assert stored(web).status == status
        # A stale confirmation link does not lift it either.
        token = links.make_token("web-test-secret", subscriber_id=reader.id, address=reader.address, purpose="confirm")
        assert web.form(f"/confirm/{token}", page="/subscribe", follow_redirects=False).status_code == 409
        assert stored(web).status == status


def test_every_status_change_leaves_a_line_in_the_subscribers_history(web):
    confirmed(web)
    web.form(_unsubscribe_path(web))
    with db.session_scope(web.engine) as session:
        reader = subscribers.get(session, "ana@example.org")
        changes = session.exec(select(SubscriberChange).where(SubscriberChange.subscriber_id == reader.id)
                               .order_by(SubscriberChange.id)).all()
    assert [(c.from_status, c.to_status) for c in changes] == [
        (None, "pending"), ("pending", "active"), ("active", "unsubscribed")]
    assert "unsubscribed by the subscriber" in changes[-1].reason


def test_dispatch_run_sends_the_notices_a_web_process_planned(web, engine, mail_sink):
    """A confirmation planned while the web process's sender was down is sent by `dispatch run`."""
    from dispatch.scheduler import Runner

    web.client.app.state.notice_worker.stop()  # as if the web process had gone
    subscribe(web)
    assert web.notices_due() == 1
    runner = Runner(web.client.app.state.settings, engine)
    try:
        runner.run_once()
    finally:
        runner.close()
    assert web.notices_due() == 0
    (mail,) = web.mails()
    assert mail["To"] == "ana@example.org" and "Confirm" in mail["Subject"]
