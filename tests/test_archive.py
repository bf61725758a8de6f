"""The web version, the archive and the feeds (issue 15, parts 1 and 2):
every link in a delivered email opens with its token and is refused
without it in readers mode; public and off modes; admins see everything;
the revision history; Atom feeds that a feed reader parses."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import feedparser
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import select

from dispatch import admins, db, links, revisions, sitreps, subscribers
from dispatch.config import Settings
from dispatch.models import Subscriber, SubscriberKind
from dispatch.scheduler import Runner
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences
from dispatch.web import create_app

from .conftest import FIXTURES
from .servers import scripted_smtp

APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
MORNING = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
SITE = "http://testserver"
ADMIN = ("editor", "correct horse battery")
TITLES = ["Port Strike Halts Grain Shipments from Odesa", "Border Crossing Reopens at Rafah",
          "Copper Prices Jump on Andean Mine Stoppage"]


@pytest.fixture
def smtp(tmp_path):
    sink, handler = scripted_smtp(tmp_path / "mail")
    yield sink, handler
    sink.stop()


def settings_for(database_url, smtp, **kw):
    # The emails here are sent at a fixed MORNING and opened at today's date:
    # their view links must not expire as the calendar moves on.
    kw.setdefault("view_link_days", 3650)
    return Settings(database_url=database_url, smtp_host=smtp[0].host, smtp_port=smtp[0].port,
                    mail_from="Briefings <news@example.org>", secret_key=SecretStr("archive-test-secret"),
                    public_url=f"{SITE}/", sender_threads=1, brand="The Northern Desk", **kw)


def sitrep_text(title: str) -> str:
    return (FIXTURES / "standard.txt").read_text().replace(TITLES[0], title)


def seed(engine, *, readers=("ana@example.org",), regions=(None, None, None)):
    """Three approved SITREPs (the third only in the americas) and immediate readers."""
    ids = []
    with db.session_scope(engine) as session:
        for title, region in zip(TITLES, regions):
            s = sitreps.import_parsed(session, parse(sitrep_text(title)), actor="ed",
                                      regions=[region] if region else None).sitrep
            ids.append(s.id)
        for address in readers:
            sub = subscribers.add_subscriber(session, address, kind=SubscriberKind.email,
                                             prefs=Preferences(cadence="daily", send_at="07:00"))
            sub.created_at = APPROVED - timedelta(days=3)
        for i in ids:
            sitreps.approve_sitrep(session, i, by="chief", at=APPROVED)
    return ids


def deliver(settings, engine, handler):
    runner = Runner(settings, engine, clock=lambda: MORNING)
    try:
        assert runner.run_once().by_status == {"sent": 1}
    finally:
        runner.close()
    (path,) = sorted(handler.folder.glob("*.eml"))
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def client(settings, engine):
    return TestClient(create_app(settings, engine), base_url=SITE)


def email_links(message) -> list[str]:
    html = message.get_payload()[1].get_content()
    text = message.get_payload()[0].get_content()
    found = {a["href"] for a in BeautifulSoup(html, "html.parser").find_all("a") if not a["href"].startswith("#")}
    found |= set(re.findall(r"^(https?://\S+)$", text, flags=re.M))
    return sorted(found)


def test_every_link_in_a_delivered_email_opens_with_its_token_and_not_without(database_url, engine, smtp):
    settings = settings_for(database_url, smtp)
    ids = seed(engine)
    message = deliver(settings, engine, smtp[1])
    found = email_links(message)
    paths = {urlsplit(u).path.split("/")[1] for u in found}
    assert paths == {"archive", "view", "preferences", "unsubscribe"}
    assert sum(f"/archive/{i}?t=" in u for u in found for i in ids) == 3
    web = client(settings, engine)
    with web:
        for url in found:
            fresh = TestClient(web.app, base_url=SITE)  # no cookie: the link alone
            assert fresh.get(url).status_code == 200, url
        # The same URLs stripped of their tokens are refused, saying how to get access.
        for i in ids:
            refused = TestClient(web.app, base_url=SITE).get(f"/archive/{i}")
            assert refused.status_code == 403 and "a link in one of your briefing emails" in refused.text
        assert TestClient(web.app, base_url=SITE).get("/archive").status_code == 403
        # A token grants only what it names: SITREP 1's token does not open SITREP 2.
        token = links.sitrep_token("archive-test-secret", ids[0])
        assert TestClient(web.app, base_url=SITE).get(f"/archive/{ids[1]}?t={token}").status_code == 403
        assert TestClient(web.app, base_url=SITE).get(f"/archive/{ids[0]}?t={token}x").status_code == 403
        # The web version shows the digest and signs its reader in to the archive.
        (view_url,) = [u for u in found if "/view/" in u]
        reader = TestClient(web.app, base_url=SITE)
        shown = reader.get(view_url)
        assert shown.status_code == 200 and all(t in shown.text for t in TITLES)
        assert "dispatch_reader" in shown.headers["set-cookie"] and "HttpOnly" in shown.headers["set-cookie"]
        assert reader.get("/archive").status_code == 200
        assert reader.get(f"/archive/{ids[2]}").status_code == 200
        assert TestClient(web.app, base_url=SITE).get(view_url[:-3] + "abc").status_code == 400


def test_the_reader_cookie_ends_with_the_subscription(database_url, engine, smtp):
    settings = settings_for(database_url, smtp)
    seed(engine)
    (view_url,) = [u for u in email_links(deliver(settings, engine, smtp[1])) if "/view/" in u]
    with client(settings, engine) as web:
        web.get(view_url)
        assert web.get("/archive").status_code == 200
        with db.session_scope(engine) as session:
            from dispatch import signup
            signup.unsubscribe(session, session.exec(select(Subscriber)).one(), how="test")
        assert web.get("/archive").status_code == 403


def test_public_mode_is_open_to_all_and_off_mode_to_admins_only(database_url, engine, smtp):
    ids = seed(engine)
    with client(settings_for(database_url, smtp, archive="public"), engine) as web:
        assert web.get("/archive").status_code == 200
        assert web.get(f"/archive/{ids[0]}").status_code == 200
    off = settings_for(database_url, smtp, archive="off")
    message = deliver(off, engine, smtp[1])
    assert not [u for u in email_links(message) if "/archive" in u]
    with client(off, engine) as web:
        assert web.get("/archive").status_code == 404
        assert web.get(f"/archive/{ids[0]}?t={links.sitrep_token('archive-test-secret', ids[0])}").status_code == 404
        (view_url,) = [u for u in email_links(message) if "/view/" in u]
        assert web.get(view_url).status_code == 200  # a reader's own email still shows
        sign_in(web, engine)
        assert web.get("/archive").status_code == 200
        assert web.get(f"/archive/{ids[0]}").status_code == 200


def sign_in(web, engine):
    with db.session_scope(engine) as session:
        admins.create_admin(session, *ADMIN)
    page = web.get("/admin/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = web.post("/admin/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": csrf},
                        follow_redirects=False)
    assert response.status_code == 303


def test_archive_filters_search_paging_and_history(database_url, engine, smtp):
    ids = seed(engine, regions=("europe-eurasia", "middle-east-north-africa", "americas"))
    with db.session_scope(engine) as session:
        # Released: its title changes by a correction, made by one person and approved by another.
        revisions.correct(session, ids[1], parse(sitrep_text("Border Crossing Reopens at Rafah after Talks")),
                          by="ed", note="The crossing reopened after talks.")
        revisions.approve_correction(session, ids[1], by="chief", two_person=True)
        sitreps.withdraw_sitrep(session, ids[2], by="chief", reason="wrong mine")
    with client(settings_for(database_url, smtp, archive="public"), engine) as web:
        page = BeautifulSoup(web.get("/archive").text, "html.parser")
        assert [h.text for h in page.select("article h2")] == ["Border Crossing Reopens at Rafah after Talks",
                                                                TITLES[0]]  # newest first; withdrawn gone
        only = BeautifulSoup(web.get("/archive?region=europe-eurasia").text, "html.parser")
        assert [h.text for h in only.select("article h2")] == [TITLES[0]]
        assert "No SITREP matches" in web.get("/archive?q=zzz-not-there").text
        assert len(BeautifulSoup(web.get("/archive?q=Rafah").text, "html.parser").select("article")) == 1
        assert web.get("/archive?region=" + "%3Cscript%3E").status_code == 400
        assert web.get("/archive?after=abc").status_code == 400
        page = BeautifulSoup(web.get(f"/archive/{ids[1]}").text, "html.parser")
        history = [li.get_text(" ", strip=True) for li in page.select("ol.history li")]
        assert history[0].startswith("Filed") and history[1].startswith("Published")
        assert history[2].startswith("Correction") and "title" in history[2]
        assert page.select("ol.history li.correction") and "chief" not in page.select_one("ol.history").text
        assert web.get(f"/archive/{ids[2]}").status_code == 410  # withdrawn
        assert web.get("/archive/999999").status_code == 404


def test_the_public_feed_validates_and_filters(database_url, engine, smtp):
    seed(engine, regions=("europe-eurasia", "middle-east-north-africa", "americas"))
    with client(settings_for(database_url, smtp, archive="public"), engine) as web:
        response = web.get("/feeds/sitreps.atom")
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/atom+xml")
        assert_valid_atom(response.content, count=3)
        europe = feedparser.parse(web.get("/feeds/sitreps.atom?region=europe-eurasia").content)
        assert [e.title for e in europe.entries] == [TITLES[0]]
        by = feedparser.parse(web.get("/feeds/sitreps.atom?analyst=dana-whitfield").content)
        assert len(by.entries) == 3
        assert all("Dana Whitfield" in [a.name for a in e.authors] for e in by.entries)
        assert feedparser.parse(web.get("/feeds/sitreps.atom?analyst=nobody-at-all").content).entries == []
        assert web.get("/feeds/sitreps.atom?region=%25%25").status_code == 400
    with client(settings_for(database_url, smtp), engine) as web:
        assert web.get("/feeds/sitreps.atom").status_code == 404  # readers mode: no public feed


def assert_valid_atom(body: bytes, *, count: int):
    """What RFC 4287 requires, as a feed reader reads it."""
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "atom10"
    assert parsed.feed.id and parsed.feed.title and parsed.feed.updated
    assert any(link.rel == "self" for link in parsed.feed.links)
    assert len(parsed.entries) == count
    for entry in parsed.entries:
        assert entry.id and entry.title and entry.updated and entry.link
        assert entry.get("authors") or parsed.feed.get("authors")
        assert entry.content[0].type == "text/html"
    return parsed


def test_a_readers_personal_feed_matches_their_preferences_and_its_links_open(database_url, engine, smtp):
    settings = settings_for(database_url, smtp)
    seed(engine, regions=("europe-eurasia", "middle-east-north-africa", "americas"))
    with db.session_scope(engine) as session:
        sub = session.exec(select(Subscriber)).one()
        subscribers.edit_subscriber(session, sub.id, Preferences(regions=["europe-eurasia", "americas"]))
        prefs_path = links.link_path("archive-test-secret", subscriber_id=sub.id, address=sub.address,
                                     purpose="preferences")
    with client(settings, engine) as web:
        page = BeautifulSoup(web.get(prefs_path).text, "html.parser")
        feed_url = page.find("input", attrs={"aria-label": "Your feed address"})["value"]
        assert feed_url.startswith(f"{SITE}/feeds/reader/")
        parsed = assert_valid_atom(web.get(feed_url).content, count=2)
        assert sorted(e.title for e in parsed.entries) == sorted([TITLES[0], TITLES[2]])
        for entry in parsed.entries:
            assert TestClient(web.app, base_url=SITE).get(entry.link).status_code == 200
        assert web.get(feed_url.replace("/reader/", "/reader/x")).status_code == 400


def test_no_archive_view_or_feed_token_reaches_a_log_line():
    from dispatch import logsafe

    redact = logsafe.Redactor()
    sitrep = links.sitrep_token("k", 3)
    view = links.view_token("k", delivery_id=5, subscriber_id=2, address="a@example.org")
    feed = links.feed_token("k", subscriber_id=2, address="a@example.org")
    for line, token in ((f'"GET /archive/3?t={sitrep} HTTP/1.1" 200', sitrep),
                        (f'"GET /view/{view} HTTP/1.1" 200', view),
                        (f'"GET /feeds/reader/{feed}.atom HTTP/1.1" 200', feed),
                        (f"opened https://news.example.org/archive/3?t={sitrep}", sitrep)):
        shown = redact(line)
        assert token not in shown and token.split(".")[-1] not in shown, shown


from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

from dispatch import archive_query  # noqa: E402
from dispatch.errors import FieldError  # noqa: E402


@hsettings(max_examples=300, deadline=None)
@given(region=st.one_of(st.none(), st.text(max_size=300)), analyst=st.one_of(st.none(), st.text(max_size=300)),
       search=st.one_of(st.none(), st.text(max_size=300)))
def test_archive_filters_are_valid_or_a_clear_error_naming_the_field(region, analyst, search):
    try:
        filters = archive_query.Filters.parse(region=region, analyst=analyst, search=search)
    except FieldError as exc:
        assert exc.field in ("region", "analyst")
        return
    for slug in (*filters.regions, *filters.analysts):
        assert 0 < len(slug) <= archive_query.MAX_FILTER and all(ch.isalnum() or ch in "-_." for ch in slug)


def test_brand_and_postal_address_are_one_line_and_shown_in_config(monkeypatch):
    from dispatch.config import Settings

    with pytest.raises(ValueError, match="brand"):
        Settings(brand="Desk\r\nBcc: x@example.org")
    with pytest.raises(ValueError, match="postal_address"):
        Settings(postal_address="1 Quay St\nBergen")
    with pytest.raises(ValueError, match="archive"):
        Settings(archive="everyone")
    with pytest.raises(ValueError, match="max_full_items"):
        Settings(max_full_items=0)
    shown = Settings(brand="  The   Desk ", postal_address="1 Quay St, Bergen").masked()
    assert shown["brand"] == "The Desk" and shown["postal_address"] == "1 Quay St, Bergen"
    assert shown["archive"] == "readers" and shown["max_full_items"] == "12"


def test_an_embargoed_sitrep_stays_out_of_the_archive_and_feeds_until_its_release(database_url, engine, smtp):
    ids = seed(engine)
    with db.session_scope(engine) as session:
        embargoed = sitreps.import_parsed(session, parse(sitrep_text("Harbour closure under embargo")), actor="ed",
                                          regions=["europe-eurasia"]).sitrep.id
        sitreps.approve_sitrep(session, embargoed, by="chief",
                               release_at=datetime.now(timezone.utc) + timedelta(days=1))
    with client(settings_for(database_url, smtp, archive="public"), engine) as web:
        listed = web.get("/archive").text
        assert TITLES[0] in listed and "Harbour closure under embargo" not in listed
        assert web.get(f"/archive/{embargoed}").status_code == 404
        assert "Harbour closure" not in web.get("/feeds/sitreps.atom").text
        sign_in(web, engine)  # the desk sees it before the release
        assert web.get(f"/archive/{embargoed}").status_code == 200
    with db.session_scope(engine) as session:
        sitreps.release_sitrep(session, embargoed, by="chief")
    with client(settings_for(database_url, smtp, archive="public"), engine) as web:
        assert web.get(f"/archive/{embargoed}").status_code == 200
        assert "Harbour closure" in web.get("/feeds/sitreps.atom").text
        assert TITLES[0] in web.get(f"/archive/{ids[0]}").text
