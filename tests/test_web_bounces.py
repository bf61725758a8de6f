"""The "Bounces and complaints" admin page, the events on a delivery's and
a reader's pages, and /api/bounces (issue 16, point 4's display), on SQLite
and PostgreSQL. Events are stored by the real dispatch.inbound.events."""

from __future__ import annotations

import html
import re
import typing
from datetime import timedelta

import pytest
from markupsafe import escape
from sqlmodel import select

from dispatch import admins, db, subscribers
from dispatch.desk.roles import Role
from dispatch.inbound import events
from dispatch.inbound.outcomes import Kind
from dispatch.models import Delivery, utcnow
from dispatch.subscribers import Preferences
from dispatch.web import api as api_module, bounce_pages

ROW = re.compile(r"<tr><td>(\d+)</td><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>")
HOSTILE = '550 5.1.1 <script>alert("owned")</script> no such user'


def reader_with_delivery(engine, address):
    with db.session_scope(engine) as session:
        s = subscribers.add_subscriber(session, address, prefs=Preferences())
        session.add(Delivery(subscriber_id=s.id, window_key="daily:2026-12-02", sitrep_ids=[1]))
        session.flush()
        return s.id, session.exec(select(Delivery.id).where(Delivery.subscriber_id == s.id)).one()


def record(engine, kind, delivery_id, *, key, at=None, status=None, diagnostic="", source="smtp"):
    with db.session_scope(engine) as session:
        done = events.record(session, events.Report(kind, source, delivery_id=delivery_id, status=status,
                                                    diagnostic=diagnostic, event_key=key),
                             now=at or utcnow(), soft_limit=1000)
        assert not done.duplicate
        return done.event_id


def soft_bounces(engine, delivery_id, n, *, prefix="soft"):
    return [record(engine, Kind.soft_bounce, delivery_id, key=f"{prefix}-{i}", status="4.2.2",
                   diagnostic="452 4.2.2 mailbox full") for i in range(n)]


def ids_on(page_html: str) -> list[int]:
    return [int(i) for i in ROW.findall(page_html)]


def link(page_html: str, rel: str) -> str | None:
    found = re.search(rf'rel="{rel}" href="([^"]+)"', page_html)
    return html.unescape(found.group(1)) if found else None


def test_the_page_counts_per_day_and_lists_events_linking_to_delivery_and_reader(web):
    web.sign_in()
    now = utcnow()
    gone, gone_delivery = reader_with_delivery(web.engine, "gone@example.net")
    moody, moody_delivery = reader_with_delivery(web.engine, "moody@example.net")
    full, full_delivery = reader_with_delivery(web.engine, "full@example.net")
    hard = record(web.engine, Kind.hard_bounce, gone_delivery, key="dsn-1", status="5.1.1",
                  diagnostic="550 5.1.1 no such user")
    complaint = record(web.engine, Kind.complaint, moody_delivery, key="arf-1", source="ses",
                       at=now - timedelta(days=1))
    soft = [record(web.engine, Kind.soft_bounce, full_delivery, key=f"s{i}", status="4.2.2",
                   at=now - timedelta(days=1)) for i in range(2)]
    old = record(web.engine, Kind.soft_bounce, full_delivery, key="old", status="4.2.2", at=now - timedelta(days=40))

    page = web.client.get("/admin/bounces")
    assert page.status_code == 200
    text = page.text
    assert ids_on(text) == [old, max(soft), min(soft), complaint, hard]  # newest stored first (by id)
    assert 'href="/admin/bounces"' in text  # the nav link
    today, yesterday = now.date().isoformat(), (now - timedelta(days=1)).date().isoformat()
    # Columns: hard_bounce, soft_bounce, complaint, unsubscribe, total.
    assert f"<tr><td>{today}</td><td>1</td><td>0</td><td>0</td><td>0</td><td>1</td></tr>" in text
    assert f"<tr><td>{yesterday}</td><td>0</td><td>2</td><td>1</td><td>0</td><td>3</td></tr>" in text
    assert (now - timedelta(days=40)).date().isoformat() not in text.split("</table>")[0]  # outside the 30 days
    for delivery_id, reader_id, address in ((gone_delivery, gone, "gone@example.net"),
                                            (moody_delivery, moody, "moody@example.net")):
        assert f'<a href="/admin/deliveries/{delivery_id}">#{delivery_id}</a>' in text
        assert f'<a href="/admin/subscribers/{reader_id}">{address}</a>' in text

    complaints = web.client.get("/admin/bounces?kind=complaint").text
    assert ids_on(complaints) == [complaint]
    assert ids_on(web.client.get("/admin/bounces?kind=nonsense").text) == ids_on(text)  # unknown: every kind
    assert web.client.get("/admin/bounces?after=abc").status_code == 400


def test_paging_skips_and_repeats_no_row_even_when_events_arrive(web, monkeypatch):
    monkeypatch.setattr(bounce_pages, "PAGE_ROWS", 3)
    web.sign_in()
    _, delivery_id = reader_with_delivery(web.engine, "full@example.net")
    stored = soft_bounces(web.engine, delivery_id, 8)
    record(web.engine, Kind.hard_bounce, delivery_id, key="hard-0", status="5.1.1")  # filtered out below
    first = web.client.get("/admin/bounces?kind=soft_bounce").text
    assert link(first, "prev") is None
    seen, pages, text = ids_on(first), [ids_on(first)], first
    arrived = soft_bounces(web.engine, delivery_id, 2, prefix="late")  # newer than every page being read
    while (older := link(text, "next")) is not None:
        assert "kind=soft_bounce" in older  # the filter stays in the links
        text = web.client.get(older).text
        pages.append(ids_on(text))
        seen += pages[-1]
    assert seen == sorted(stored, reverse=True) and [len(p) for p in pages] == [3, 3, 2]
    # And back towards the newest: the same pages, then the events that arrived meanwhile.
    back = []
    while (newer := link(text, "prev")) is not None:
        text = web.client.get(newer).text
        back.append(ids_on(text))
    assert back[0] == pages[1] and back[1][-3:] == pages[0] and set(arrived) <= set(back[-1] + back[-2])
    assert sorted(i for p in back + [pages[-1]] for i in p) == sorted(stored + arrived)


def test_a_viewer_may_read_the_page_and_the_events_on_delivery_and_reader_pages(web):
    with db.session_scope(web.engine) as session:
        admins.create_admin(session, "watcher", "correct horse battery", role=Role.viewer)
    web.sign_in("watcher", "correct horse battery")
    reader, delivery_id = reader_with_delivery(web.engine, "gone@example.net")
    event = record(web.engine, Kind.hard_bounce, delivery_id, key="dsn-1", status="5.1.1",
                   diagnostic="550 5.1.1 user unknown")
    for path in ("/admin/bounces", f"/admin/deliveries/{delivery_id}", f"/admin/subscribers/{reader}"):
        response = web.client.get(path)
        assert response.status_code == 200, path
        assert ids_on(response.text) == [event] and "550 5.1.1 user unknown" in response.text, path
    assert "Nothing came back" not in web.client.get(f"/admin/deliveries/{delivery_id}").text
    _, quiet_delivery = reader_with_delivery(web.engine, "quiet@example.net")
    assert "Nothing came back about this delivery" in web.client.get(f"/admin/deliveries/{quiet_delivery}").text


def test_hostile_diagnostic_text_shows_as_text_everywhere(web):
    web.sign_in()
    reader, delivery_id = reader_with_delivery(web.engine, "gone@example.net")
    record(web.engine, Kind.hard_bounce, delivery_id, key="dsn-evil", status="5.1.1", diagnostic=HOSTILE)
    shown = str(escape(HOSTILE))  # as Jinja escapes it
    for path in ("/admin/bounces", f"/admin/deliveries/{delivery_id}", f"/admin/subscribers/{reader}"):
        text = web.client.get(path).text
        assert "<script>" not in text, path
        assert shown in text, path


@pytest.fixture
def api(web):
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "reader-of-bounces", role=Role.viewer)
    web.client.headers["Authorization"] = f"Bearer {token}"
    return web.client


def test_api_pages_events_with_link_headers_and_a_delivery_carries_its_events(api, web):
    _, delivery_id = reader_with_delivery(web.engine, "full@example.net")
    stored = soft_bounces(web.engine, delivery_id, 5)
    complaint = record(web.engine, Kind.complaint, delivery_id, key="arf-1", source="ses", diagnostic=HOSTILE)
    seen, url = [], "/api/bounces?limit=2"
    while url:
        response = api.get(url)
        assert response.status_code == 200
        body = response.json()
        seen += [e["id"] for e in body["items"]]
        header = response.headers.get("link")
        assert (header is None) == (body["next"] is None)
        url = re.match(r"<([^>]+)>; rel=\"next\"", header).group(1) if header else None
    assert seen == sorted(stored + [complaint], reverse=True)
    (only,) = api.get("/api/bounces?kind=complaint").json()["items"]
    assert only["id"] == complaint and only["diagnostic"] == HOSTILE and only["source"] == "ses"
    assert api.get("/api/bounces?kind=nonsense").status_code == 422
    assert api.get("/api/bounces?after=x").status_code == 400
    delivery = api.get(f"/api/deliveries/{delivery_id}").json()
    assert [e["id"] for e in delivery["events"]] == sorted(stored + [complaint])
    assert delivery["events"][0]["kind"] == "soft_bounce" and delivery["events"][0]["status_code"] == "4.2.2"


def test_the_api_kinds_are_the_stored_kinds():
    assert typing.get_args(api_module.EventKind) == events.KINDS
