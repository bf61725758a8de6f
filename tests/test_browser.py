"""End to end in headless Chromium (Debian's package, driven by Playwright):
an admin imports, approves and delivers a SITREP; a reader subscribes,
confirms, changes regions and unsubscribes. A real web server, a real SMTP
sink and a real `dispatch run --once` process.

Set SCREENSHOT_DIR to keep the screenshots the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dispatch import admins, bootstrap, db, subscribers
from dispatch.config import Settings
from dispatch.models import SubscriberStatus
from dispatch.sink import SmtpSink, _free_port

from .conftest import FIXTURES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium package (apt-get install chromium)")
SECRET = "browser-test-secret"


@pytest.fixture
def site(tmp_path):
    """A web server on a free port, over a SQLite file, mailing to a local sink."""
    import uvicorn

    from dispatch.web import create_app

    sink = SmtpSink(tmp_path / "mail").start()
    port = _free_port("127.0.0.1")
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    settings = Settings(database_url=url, smtp_host=sink.host, smtp_port=sink.port, secret_key=SECRET,
                        public_url=f"http://127.0.0.1:{port}/", mail_from="Briefings <news@example.org>")
    engine = db.create_engine(url)
    bootstrap.init_database(engine)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the web server did not start"
    yield {"base": f"http://127.0.0.1:{port}", "engine": engine, "sink": sink, "url": url,
           "mail": tmp_path / "mail"}
    server.should_exit = True
    thread.join(timeout=10)
    sink.stop()
    engine.dispose()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def shot(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def mails(folder: Path, *, at_least: int = 0, timeout: float = 10.0) -> list[str]:
    """The emails in the sink, waiting up to ``timeout`` for ``at_least`` of
    them (confirmations are sent in the background, by the notice sender)."""
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.eml"))) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p.read_text("utf-8", "replace") for p in sorted(folder.glob("*.eml"))]


def test_an_admin_imports_approves_and_sees_the_delivery(site, browser, tmp_path):
    with db.session_scope(site["engine"]) as session:
        admins.create_admin(session, "editor", "correct horse battery")
    page = browser.new_page()
    page.goto(site["base"] + "/admin")
    assert page.url.startswith(site["base"] + "/admin/login")
    page.fill("#username", "editor")
    page.fill("#password", "correct horse battery")
    page.click("button:has-text('Sign in')")
    page.wait_for_url(site["base"] + "/admin")

    page.click("nav >> text=SITREPs")
    page.click("text=Import a SITREP")
    page.fill("#text", (FIXTURES / "standard.txt").read_text("utf-8"))
    page.click("button:has-text('Import')")
    assert "Imported SITREP" in page.inner_text(".flash")
    page.click("button:has-text('Approve')")
    assert "is approved" in page.inner_text(".flash")
    assert page.inner_text("main .badge >> nth=0") == "approved"

    page.click("nav >> text=Subscribers & channels")
    page.click("text=Add a subscriber")
    page.fill("#address", "reader@example.org")
    page.fill("#name", "Robin Reader")
    page.check("input[name=region][value=europe-eurasia]")
    page.click("button:has-text('Add')")
    assert "Added reader@example.org" in page.inner_text(".flash")

    # The scheduler, as its own process: a day from now the reader's morning window has passed.
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1, minutes=5)).isoformat()
    env = {**os.environ, "DISPATCH_DATABASE_URL": site["url"], "DISPATCH_SMTP_HOST": site["sink"].host,
           "DISPATCH_SMTP_PORT": str(site["sink"].port), "DISPATCH_SECRET_KEY": SECRET,
           "DISPATCH_MAIL_FROM": "Briefings <news@example.org>"}
    done = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--now", tomorrow],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    page.click("nav >> text=Deliveries")
    row = page.locator("tr", has_text="reader@example.org")
    assert "sent" in row.inner_text()
    row.locator("a").first.click()
    assert "Port Strike Halts Grain Shipments" in page.inner_text("main")
    assert any("reader@example.org" in m and "Port Strike" in m for m in mails(site["mail"]))
    page.goto(site["base"] + "/admin")
    shot(page, "admin-dashboard", tmp_path)


def test_a_reader_confirms_changes_regions_and_unsubscribes(site, browser, tmp_path):
    page = browser.new_page()
    page.goto(site["base"] + "/subscribe")
    page.fill("#email", "ana@example.org")
    page.fill("#name", "Ana")
    page.check("input[name=region][value=americas]")
    page.select_option("#timezone", "America/Lima")
    page.click("button:has-text('Subscribe')")
    assert "Check your inbox" in page.inner_text("h1")
    with db.session_scope(site["engine"]) as session:
        assert subscribers.get(session, "ana@example.org").status == SubscriberStatus.pending

    (confirmation,) = mails(site["mail"], at_least=1)
    confirm_url = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", confirmation).group(1)
    page.goto(confirm_url)
    page.click("button:has-text('Yes, confirm')")
    assert "Your subscription is confirmed" in page.inner_text(".flash")

    page.uncheck("input[name=region][value=americas]")
    page.check("input[name=region][value=east-asia-pacific]")
    page.check("input[name=region][value=global]")
    page.click("button:has-text('Save preferences')")
    assert "Your preferences are saved" in page.inner_text(".flash")
    shot(page, "preferences", tmp_path)
    with db.session_scope(site["engine"]) as session:
        ana = subscribers.get(session, "ana@example.org")
        assert ana.status == SubscriberStatus.active
        assert sorted(r.slug for r in ana.regions) == ["east-asia-pacific", "global"]
        assert ana.timezone == "America/Lima"

    page.click("text=Unsubscribe")
    page.click("button:has-text('Unsubscribe')")
    assert "You are unsubscribed" in page.inner_text("h1")
    with db.session_scope(site["engine"]) as session:
        assert subscribers.get(session, "ana@example.org").status == SubscriberStatus.unsubscribed


def test_a_big_csv_upload_shows_its_progress_page_until_the_report(site, browser, tmp_path, monkeypatch):
    """The background import's page reloads itself (meta refresh; CSP allows no script) and ends on the report."""
    from dispatch import import_jobs
    monkeypatch.setattr(import_jobs, "INLINE_MAX_BYTES", 1000)
    with db.session_scope(site["engine"]) as session:
        admins.create_admin(session, "editor", "correct horse battery")
    page = browser.new_page()
    page.goto(site["base"] + "/admin/subscribers/import")
    page.fill("#username", "editor")
    page.fill("#password", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/subscribers/import$"))
    rows = "email,name\n" + "".join(f"bulk{i}@example.org,Bulk {i}\n" for i in range(3000)) + "oops,Bad\n"
    page.fill("#text", rows)
    page.click("form[action='/admin/subscribers/import'] button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/subscribers/import/\d+$"))
    page.wait_for_selector("text=3000 added, 0 already there, 1 rejected", timeout=60_000)
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    assert "oops" in page.content()
    shot(page, "admin-import-job", tmp_path)
