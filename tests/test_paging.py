"""Keyset pagination (issue 14): pages stay exact while rows arrive, the
last page has no next, filters survive in every link, bad cursors are a
clear 400 — in storage, the API, the admin pages and the CLI, on SQLite and
PostgreSQL."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from itertools import count

import pytest

from dispatch import admins, db, ledger, paging, subscribers
from dispatch.digest import Window
from dispatch.errors import FieldError
from dispatch.models import DeliveryStatus

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
_numbers = count(1)


def _readers(engine, n: int) -> list[int]:
    with db.session_scope(engine) as session:
        return [subscribers.add_subscriber(session, f"reader{next(_numbers)}@example.org").id for _ in range(n)]


def _deliveries(engine, reader: int, n: int) -> None:
    with db.session_scope(engine) as session:
        ledger.plan(session, reader, [Window(f"daily:{next(_numbers)}", NOW, NOW, ()) for _ in range(n)], now=NOW)


def test_a_walk_through_the_log_while_rows_arrive_sees_each_row_once(engine):
    (reader,) = _readers(engine, 1)
    _deliveries(engine, reader, 7)
    with db.session_scope(engine) as session:
        before = [e.delivery.id for e in ledger.log(session, limit=100)]
    seen, cursor, pages = [], None, 0
    while True:
        with db.session_scope(engine) as session:
            page = ledger.log_page(session, limit=3, after=cursor)
        seen += [e.delivery.id for e in page.items]
        pages += 1
        _deliveries(engine, reader, 2)  # newer rows, at the top of a newest-first list
        if page.next is None:
            break
        cursor = page.next
    assert seen == before  # nothing repeated, nothing skipped (OFFSET would repeat)
    assert pages == 3 and len(page.items) == 1  # 3 + 3 + 1, and the last page says so


def test_subscribers_page_forward_and_back_while_readers_join(engine):
    ids = _readers(engine, 5)
    with db.session_scope(engine) as session:
        first = subscribers.subscriber_page(session, limit=2)
        assert [s.id for s in first.items] == ids[:2] and first.previous is None and first.next == ids[1]
    joined = _readers(engine, 2)  # later ids: they come at the end of the walk, once each
    with db.session_scope(engine) as session:
        second = subscribers.subscriber_page(session, limit=2, after=first.next)
        assert [s.id for s in second.items] == ids[2:4] and second.previous == ids[2]
        back = subscribers.subscriber_page(session, limit=2, before=second.previous)
        assert [s.id for s in back.items] == ids[:2] and back.previous is None and back.next == ids[1]
        rest = subscribers.subscriber_page(session, limit=10, after=second.next)
        assert [s.id for s in rest.items] == [ids[4], *joined] and rest.next is None


def test_filters_hold_on_every_page(engine):
    (reader,) = _readers(engine, 1)
    _deliveries(engine, reader, 6)
    with db.session_scope(engine) as session:
        ids = [e.delivery.id for e in ledger.log(session)]
        from dispatch.models import Delivery
        for i in ids[::2]:
            session.get(Delivery, i).status = DeliveryStatus.failed
    with db.session_scope(engine) as session:
        one = ledger.log_page(session, limit=2, status=DeliveryStatus.failed)
        two = ledger.log_page(session, limit=2, status=DeliveryStatus.failed, after=one.next)
    assert [e.delivery.id for e in one.items + two.items] == ids[::2] and two.next is None


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "1.5", "99999999999999999999", "١٢", "1e3"])
def test_a_bad_cursor_is_an_error_naming_it(bad):
    with pytest.raises(FieldError, match="^after: .*not a cursor"):
        paging.parse_cursor(bad)
    assert paging.parse_cursor("") is None and paging.parse_cursor(" 42 ") == 42


def test_a_prefix_is_a_range_in_code_point_order():
    assert paging._after_prefix("ab") == "ac"
    assert paging._after_prefix("a\ud7ff") == "a\ue000"  # past the surrogates, which no text holds
    assert paging._after_prefix("a\U0010ffff") == "b"


# --- the API -------------------------------------------------------------------------

@pytest.fixture
def api(web):
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "pager")
    web.client.headers["Authorization"] = f"Bearer {token}"
    return web


def _next_link(response) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return match.group(1) if match else None


def test_the_api_walks_the_log_by_its_link_header_while_rows_arrive(api):
    (reader,) = _readers(api.engine, 1)
    _deliveries(api.engine, reader, 5)
    everything = [d["id"] for d in api.client.get("/api/deliveries").json()["items"]]
    url, seen = "/api/deliveries?limit=2&status=pending", []
    while url:
        response = api.client.get(url)
        assert response.status_code == 200
        body = response.json()
        seen += [d["id"] for d in body["items"]]
        url = _next_link(response)
        assert (url is None) == (body["next"] is None)
        if url:
            assert "status=pending" in url and "limit=2" in url and f"after={body['next']}" in url
        _deliveries(api.engine, reader, 1)
    assert seen == everything


def test_the_api_honours_limit_and_refuses_bad_cursors(api):
    _readers(api.engine, 4)
    body = api.client.get("/api/subscribers?limit=3").json()
    assert len(body["items"]) == 3 and body["next"] == str(body["items"][-1]["id"])
    last = api.client.get(f"/api/subscribers?limit=3&after={body['next']}")
    assert len(last.json()["items"]) == 1 and last.json()["next"] is None and "link" not in last.headers
    for path in ("/api/subscribers", "/api/deliveries", "/api/sitreps"):
        bad = api.client.get(f"{path}?after=nonsense")
        assert bad.status_code == 400 and "after" in bad.text and "cursor" in bad.text
        assert api.client.get(f"{path}?limit=1001").status_code == 422
        assert api.client.get(f"{path}?limit=0").status_code == 422


# --- the admin pages -------------------------------------------------------------------

def test_admin_pages_link_to_older_and_newer_with_their_filters(web):
    web.sign_in()
    (reader,) = _readers(web.engine, 1)
    _deliveries(web.engine, reader, 120)
    first = web.client.get("/admin/deliveries?status=pending")
    assert first.status_code == 200 and first.text.count("/admin/deliveries/") >= 50
    older = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    assert "status=pending" in older and "after=" in older and 'rel="prev"' not in first.text
    second = web.client.get(older)
    assert 'rel="prev"' in second.text and 'rel="next"' in second.text
    third = web.client.get(re.search(r'rel="next" href="([^"]+)"', second.text).group(1).replace("&amp;", "&"))
    assert 'rel="next"' not in third.text and 'rel="prev"' in third.text  # 50 + 50 + 20
    _readers(web.engine, 60)
    readers = web.client.get("/admin/subscribers?kind=email")
    assert readers.status_code == 200 and 'rel="next"' in readers.text and "kind=email" in readers.text
    page = web.client.get(f"/admin/subscribers/{reader}")
    assert 'rel="next"' in page.text  # its own deliveries, 20 a page
    for path in ("/admin/deliveries", "/admin/subscribers", "/admin/sitreps", f"/admin/subscribers/{reader}"):
        bad = web.client.get(f"{path}?before=x")
        assert bad.status_code == 400 and "before" in bad.text


# --- the CLI -----------------------------------------------------------------------------

def test_the_cli_lists_a_page_and_says_how_to_get_the_next(run):
    assert run("init").exit_code == 0
    for i in range(3):
        assert run("subscriber", "add", f"cli{i}@example.org").exit_code == 0
    first = run("subscriber", "list", "--limit", "2")
    assert first.exit_code == 0 and "cli1@" in first.output and "cli2@" not in first.output
    hint = re.search(r"--after (\d+)", first.output)
    assert hint, first.output
    rest = run("subscriber", "list", "--limit", "2", "--after", hint.group(1))
    assert "cli2@" in rest.output and "cli0@" not in rest.output and "--after" not in rest.output
    assert run("subscriber", "list", "--after", "x").exit_code == 2
    assert run("sitrep", "list", "--limit", "1").exit_code == 0
    assert run("log", "--limit", "1", "--after", "5").exit_code == 0


def test_a_day_of_the_log_pages_newest_first_through_its_own_index(engine):
    """A filter of a few days sorts what its index finds (id + 0); pages and cursors are the same."""
    (reader,) = _readers(engine, 1)
    _deliveries(engine, reader, 5)
    since = NOW.replace(hour=0)
    until = since + timedelta(days=1)
    with db.session_scope(engine) as session:
        everything = [e.delivery.id for e in ledger.log(session, since=since, until=until)]
        one = ledger.log_page(session, limit=3, since=since, until=until)
        two = ledger.log_page(session, limit=3, since=since, until=until, after=one.next)
        back = ledger.log_page(session, limit=3, since=since, until=until, before=two.previous)
    assert [e.delivery.id for e in one.items + two.items] == everything and two.next is None
    assert len(everything) == 5 and [e.delivery.id for e in back.items] == everything[:3] and back.previous is None
