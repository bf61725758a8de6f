"""Admin pages through the test client: sign-in, SITREPs, subscribers and
channels, CSV, deliveries, previews."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlmodel import select

from dispatch import db, ledger, sitreps, subscribers
from dispatch.digest import Window
from dispatch.models import Delivery, DeliveryStatus, SitrepStatus, Subscriber, SubscriberStatus
from dispatch.sitrep_text import parse

from .conftest import FIXTURES

STANDARD = (FIXTURES / "standard.txt").read_text("utf-8")


def import_standard(web, **extra) -> int:
    response = web.form("/admin/sitreps/new", {"text": STANDARD, **extra}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def test_sign_in_and_out(web):
    assert web.client.get("/admin", follow_redirects=False).headers["location"] == "/admin/login?next=/admin"
    web.sign_in()
    assert "Awaiting approval" in web.client.get("/admin").text
    web.form("/admin/logout", page="/admin")
    assert web.client.get("/admin", follow_redirects=False).status_code == 303


def test_wrong_password_and_unknown_user_get_the_same_answer(web):
    web.sign_in()  # makes the admin
    web.form("/admin/logout", page="/admin")
    wrong = web.form("/admin/login", {"username": "editor", "password": "not the password"})
    unknown = web.form("/admin/login", {"username": "nobody", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password" in wrong.text and "Wrong username or password" in unknown.text


def test_login_redirects_only_within_the_site(web):
    from tests.webtools import ADMIN
    web.sign_in()
    web.form("/admin/logout", page="/admin")
    for target, expected in (("/admin/sitreps", "/admin/sitreps"), ("https://evil.example/", "/admin"),
                             ("//evil.example/x", "/admin")):
        response = web.form("/admin/login", {"username": ADMIN[0], "password": ADMIN[1], "next": target},
                            follow_redirects=False)
        assert response.headers["location"] == expected
        web.form("/admin/logout", page="/admin")


def test_import_by_paste_approve_and_withdraw(web):
    web.sign_in()
    sitrep_id = import_standard(web)
    page = web.client.get(f"/admin/sitreps/{sitrep_id}").text
    assert "Port Strike Halts Grain Shipments" in page and "draft" in page
    assert "Port Strike" in web.client.get("/admin").text  # awaiting approval on the dashboard
    web.form(f"/admin/sitreps/{sitrep_id}/approve", page=f"/admin/sitreps/{sitrep_id}")
    with db.session_scope(web.engine) as session:
        stored = sitreps.get(session, sitrep_id)
        assert stored.status == SitrepStatus.approved and stored.approved_by == "editor"
    web.form(f"/admin/sitreps/{sitrep_id}/withdraw", {"reason": "superseded"}, page=f"/admin/sitreps/{sitrep_id}")
    with db.session_scope(web.engine) as session:
        assert sitreps.get(session, sitrep_id).status == SitrepStatus.withdrawn
    # The same text again is recognised, not stored twice.
    again = web.form("/admin/sitreps/new", {"text": STANDARD})
    assert "imported before" in again.text


def test_import_by_upload_with_approval(web):
    web.sign_in()
    html = web.client.get("/admin/sitreps/new").text
    from tests.webtools import csrf_from
    response = web.client.post("/admin/sitreps/new", data={"csrf_token": csrf_from(html), "approve": "true"},
                               files={"file": ("odesa.txt", STANDARD.encode(), "text/plain")}, follow_redirects=False)
    assert response.status_code == 303
    sitrep_id = int(response.headers["location"].rsplit("/", 1)[1])
    with db.session_scope(web.engine) as session:
        assert sitreps.get(session, sitrep_id).status == SitrepStatus.approved


def test_malformed_uploads_are_refused_clearly(web):
    from tests.webtools import csrf_from
    web.sign_in()
    csrf = csrf_from(web.client.get("/admin/sitreps/new").text)
    bad_date = (FIXTURES / "bad_date.txt").read_bytes()
    cases = [
        (("bad.txt", bad_date, "text/plain"), 400, "date"),
        (("photo.png", (FIXTURES / "bad_binary.png").read_bytes(), "image/png"), 400, "not a text file"),
        (("huge.txt", b"x" * (300 * 1024), "text/plain"), 413, "larger than"),
        (("latin1.txt", "Caf\xe9 SITREP".encode("latin-1"), "text/plain"), 400, "not UTF-8"),
    ]
    for upload, status, words in cases:
        response = web.client.post("/admin/sitreps/new", data={"csrf_token": csrf}, files={"file": upload})
        assert response.status_code == status, (upload[0], response.text)
        assert words in response.text
    with db.session_scope(web.engine) as session:
        assert sitreps.list_sitreps(session) == []


def test_edit_title_bullets_commentary_and_regions(web):
    web.sign_in()
    sitrep_id = import_standard(web)
    page = f"/admin/sitreps/{sitrep_id}"
    response = web.form(f"{page}/edit", {
        "title": "Port Strike Ends in Odesa", "event_date": "2025-03-04",
        "bullets": "Workers returned after wages were paid.\n\nLoading resumed on Thursday.",
        "quote_0": "Payment came quickly; the budget strain remains.", "quote_1": "A short stoppage after all.",
        "region": ["europe-eurasia"]}, page=page)
    assert response.status_code == 200
    with db.session_scope(web.engine) as session:
        stored = sitreps.get(session, sitrep_id)
        assert stored.title == "Port Strike Ends in Odesa" and str(stored.event_date) == "2025-03-04"
        assert stored.summary == ["Workers returned after wages were paid.", "Loading resumed on Thursday."]
        assert [c.text for c in stored.commentary] == ["Payment came quickly; the budget strain remains.",
                                                       "A short stoppage after all."]
        assert sitreps.region_slugs(stored) == ["europe-eurasia"]
        assert {c.action for c in stored.changes} >= {"edited", "tagged"}
    bad = web.form(f"{page}/edit", {"title": "x", "event_date": "tomorrow", "bullets": "a"}, page=page)
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text


def test_previews_of_a_sitrep_and_of_a_subscribers_next_delivery(web):
    web.sign_in()
    sitrep_id = import_standard(web)
    preview = web.client.get(f"/admin/sitreps/{sitrep_id}/preview").text
    assert "Port Strike Halts Grain Shipments" in preview and "Slack message 1" in preview and "srcdoc" in preview
    with db.session_scope(web.engine) as session:
        reader = subscribers.add_subscriber(session, "reader@example.org")
    # Nothing approved yet: the preview says why nothing would go.
    assert "Nothing would be sent" in web.client.get(f"/admin/subscribers/{reader.id}/preview").text
    web.form(f"/admin/sitreps/{sitrep_id}/approve", page=f"/admin/sitreps/{sitrep_id}")
    with db.session_scope(web.engine) as session:  # approved just before the reader's window
        sitreps.get(session, sitrep_id).approved_at = datetime.now(timezone.utc) - timedelta(seconds=5)
    page = web.client.get(f"/admin/subscribers/{reader.id}/preview").text
    assert "Port Strike Halts Grain Shipments" in page and "Nothing would be sent" not in page


def test_add_edit_pause_and_remove_subscribers_and_channels(web):
    web.sign_in()
    response = web.form("/admin/subscribers/new", {"kind": "email", "address": "Lee@Example.org", "name": "Lee",
                                                   "region": ["americas"], "cadence": "weekly", "send_at": "09:00",
                                                   "timezone": "America/Lima", "weekday": "2", "format": "text"},
                        follow_redirects=False)
    assert response.status_code == 303
    lee_id = int(response.headers["location"].rsplit("/", 1)[1])
    channel = web.form("/admin/subscribers/new", {"kind": "slack", "address": "C0123ABCD", "cadence": "immediate",
                                                  "send_at": "08:00", "timezone": "UTC"},
                       page="/admin/subscribers/new?kind=slack", follow_redirects=False)
    assert channel.status_code == 303
    bad = web.form("/admin/subscribers/new", {"kind": "email", "address": "lee@", "timezone": "UTC"})
    assert bad.status_code == 400 and "not a valid address" in bad.text
    listing = web.client.get("/admin/subscribers?kind=slack").text
    assert "C0123ABCD" in listing and "Lee@" not in listing.lower().replace("lee@example.org", "")
    assert "lee@example.org" in web.client.get("/admin/subscribers?q=lee").text.lower()
    web.form(f"/admin/subscribers/{lee_id}", {"status": "disabled", "region": ["global"], "cadence": "daily",
                                              "send_at": "07:00", "timezone": "UTC", "weekday": "0",
                                              "format": "html"}, page=f"/admin/subscribers/{lee_id}")
    with db.session_scope(web.engine) as session:
        lee = session.get(Subscriber, lee_id)
        assert lee.status == SubscriberStatus.disabled and [r.slug for r in lee.regions] == ["global"]
    web.form(f"/admin/subscribers/{lee_id}/remove", page=f"/admin/subscribers/{lee_id}")
    with db.session_scope(web.engine) as session:
        assert session.get(Subscriber, lee_id) is None


def test_csv_import_reports_rejected_rows_and_export_round_trips(web):
    from tests.webtools import csrf_from
    web.sign_in()
    csv_text = ("email,name,regions,cadence,at,tz\n"
                "kim@example.org,Kim,europe-eurasia;americas,daily,07:30,Europe/Berlin\n"
                "broken-address,Nobody,,daily,07:00,UTC\n"
                "sam@example.org,Sam,,weekly,08:00,Mars/Base\n"
                "ola@example.org,Ola,,immediate,07:00,UTC\n")
    csrf = csrf_from(web.client.get("/admin/subscribers/import").text)
    page = web.client.post("/admin/subscribers/import", data={"csrf_token": csrf},
                           files={"file": ("list.csv", csv_text.encode(), "text/csv")}).text
    assert "2 added" in page and "2 rejected" in page
    assert "broken-address" in page and "Mars/Base" in page
    exported = web.client.get("/admin/subscribers/export.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "kim@example.org" in exported.text and "ola@example.org" in exported.text
    assert "broken-address" not in exported.text


def test_delivery_log_filters_attempts_and_retry(web):
    web.sign_in()
    first = import_standard(web)
    with db.session_scope(web.engine) as session:
        other = sitreps.import_parsed(session, parse(
            (FIXTURES / "dash_bullets_no_commentary.txt").read_text("utf-8")), actor="t").sitrep
        second = other.id
        a = subscribers.add_subscriber(session, "a@example.org")
        b = subscribers.add_subscriber(session, "b@example.org")
        now = datetime.now(timezone.utc)
        ledger.plan(session, a.id, [Window("w1", now, now, (first,))], now=now)
        ledger.plan(session, b.id, [Window("w1", now, now, (second,))], now=now)
        ledger.plan(session, b.id, [Window("w2", now, now, (first, second))], now=now)
        failed = session.exec(select(Delivery).where(Delivery.subscriber_id == b.id,
                                                     Delivery.window_key == "w1")).one()
        failed.status, failed.last_error = DeliveryStatus.failed, "550 mailbox unavailable"
        failed_id = failed.id

    def ids(query):
        page = web.client.get(f"/admin/deliveries?{query}").text
        return sorted(int(n) for n in re.findall(r'href="/admin/deliveries/(\d+)"', page))
    everything = ids("")
    assert len(everything) == 3
    assert len(ids(f"sitrep={first}")) == 2 and len(ids(f"sitrep={second}")) == 2
    assert ids("status=failed") == [failed_id]
    assert len(ids("subscriber=b@example.org")) == 2
    assert ids(f"day={datetime.now(timezone.utc).date()}") == everything
    assert ids("day=2001-01-01") == []
    assert web.client.get("/admin/deliveries?day=someday").status_code == 400
    assert "550 mailbox unavailable" in web.client.get("/admin").text  # recent failures
    detail = web.client.get(f"/admin/deliveries/{failed_id}").text
    assert "550 mailbox unavailable" in detail and "Retry" in detail
    web.form(f"/admin/deliveries/{failed_id}/retry", page=f"/admin/deliveries/{failed_id}")
    with db.session_scope(web.engine) as session:
        assert session.get(Delivery, failed_id).status == DeliveryStatus.pending
    again = web.form(f"/admin/deliveries/{failed_id}/retry", page=f"/admin/deliveries/{failed_id}")
    assert again.status_code == 409 and "nothing to retry" in again.text
