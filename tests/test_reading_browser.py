"""The email as a reader's browser shows it (Debian's headless Chromium):
no sideways scrolling on a phone, dark colours when the reader asks for
dark mode, and the contents list jumping to each SITREP."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dispatch import digest, links
from dispatch.digest import Quote, Recipient, SitrepView
from dispatch.render import EmailRenderer, Personal
from dispatch.sitrep_text import parse

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium package (apt-get install chromium)")
SAMPLES = sorted((Path(__file__).parent.parent / "dispatch" / "samples").glob("*.txt"))
SITE = "https://news.example.org"
NOW = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def html():
    views = []
    for n, path in enumerate(SAMPLES * 4, start=1):  # 16 SITREPs: 12 in full, 4 headlines
        p = parse(path.read_text())
        views.append(SitrepView(id=n, title=f"{p.title} {n}", event_date=p.event_date, approved_at=NOW,
                                regions=("global",), region_names=("Global",), summary=tuple(p.summary),
                                commentary=tuple(Quote(q.analyst_slug, q.analyst_name, q.analyst_title, q.text)
                                                 for q in p.commentary)))
    reader = Recipient(id=1, kind="email", address="ana@example.org", name="Ana Ortiz")
    urls = links.subscriber_links(SITE, "k", subscriber_id=1, address=reader.address)
    personal = Personal.for_recipient(reader, preferences_url=urls.preferences_url,
                                      unsubscribe_url=urls.unsubscribe_url, view_url=f"{SITE}/view/1.x")
    renderer = EmailRenderer(archive=links.ArchiveLinks(SITE, "k"))
    return renderer.render(digest.build_digest(reader, "k", views), personal).html


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def test_fits_a_phone_without_sideways_scrolling(browser, html):
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.set_content(html)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # The preheader is in the document for inboxes but never shown.
    assert page.locator("div.preheader").is_hidden()
    page.close()


@pytest.mark.parametrize("scheme, dark", [("light", False), ("dark", True)])
def test_dark_mode_follows_the_readers_setting(browser, html, scheme, dark):
    page = browser.new_page(viewport={"width": 800, "height": 800}, color_scheme=scheme)
    page.set_content(html)
    background = page.evaluate("getComputedStyle(document.querySelector('table.container')).backgroundColor")
    text = page.evaluate("getComputedStyle(document.querySelector('h2.sitrep-title a')).color")
    channels = [int(c) for c in background[background.index("(") + 1:-1].split(",")[:3]]
    assert (sum(channels) < 150) == dark, background
    assert (text == "rgb(232, 238, 245)") == dark, text
    page.close()


def test_the_contents_jump_to_each_sitrep(browser, html):
    page = browser.new_page(viewport={"width": 800, "height": 800})
    page.set_content(html)
    anchors = page.locator("ol.toc a")
    assert anchors.count() == 16
    anchors.nth(14).click()  # a headline beyond the twelve in full
    target = anchors.nth(14).get_attribute("href")[1:]
    # Scrolled to it (near the end, as far as the page goes): in view, where it was far below.
    assert page.evaluate("window.scrollY") > 2000
    assert 0 <= page.evaluate(f"document.getElementById('{target}').getBoundingClientRect().top") < 800
    page.close()
