"""Emails that stay whole (issue 15, part 3): size bound, preheader,
contents, semantic HTML that Outlook keeps, dark mode, brand and postal
line, plain text within 78 columns."""

import re
from datetime import date, datetime, timezone

import pytest
from bs4 import BeautifulSoup

from dispatch import digest, links
from dispatch.digest import Quote, Recipient, SitrepView
from dispatch.render import EmailRenderer, Personal

NOW = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)
SITE = "https://news.example.org"
REGIONS = ["Europe and Eurasia", "East Asia and Pacific", "Americas", "Sub-Saharan Africa"]


def view(n, *, title=None):
    return SitrepView(
        id=n, title=title or f"Event {n}: a development that an analyst wrote a fairly long title about",
        event_date=date(2026, 11, 1 + n % 25), approved_at=NOW, regions=("r",), region_names=(REGIONS[n % 4],),
        summary=tuple(f"Bullet {b} of SITREP {n}: " + "what happened, where, who was involved. " * 4
                      for b in range(5)),
        commentary=tuple(Quote(f"a{q}", f"Analyst {q}", "Dr.", "Why it matters, at some length. " * 12)
                         for q in range(3)))


def reader(**kw):
    base = dict(id=7, kind="email", address="reader@example.org", name="Ana Ortiz")
    base.update(kw)
    return Recipient(**base)


def personal(r):
    urls = links.subscriber_links(SITE, "k", subscriber_id=r.id, address=r.address)
    return Personal.for_recipient(r, preferences_url=urls.preferences_url, unsubscribe_url=urls.unsubscribe_url,
                                  view_url=f"{SITE}/view/{links.view_token('k', delivery_id=1, subscriber_id=r.id, address=r.address)}")


@pytest.fixture(scope="module")
def renderer():
    return EmailRenderer(brand="The Northern Desk", postal_address="Northern Desk Ltd, 1 Quay Street, Bergen, Norway",
                         max_full_items=12, archive=links.ArchiveLinks(SITE, "k", mode="readers"))


def test_a_fifty_sitrep_digest_stays_under_90_kb_with_its_footer(renderer):
    r = reader()
    content = renderer.render(digest.build_digest(r, "daily:x", [view(n) for n in range(1, 51)]), personal(r))
    size = len(content.html.encode("utf-8"))
    assert size < 90 * 1024, size
    soup = BeautifulSoup(content.html, "html.parser")
    assert len(soup.select("h2.sitrep-title")) == 12  # in full
    headlines = soup.select("ul.headlines li")
    assert len(headlines) == 38 and all(li.a["href"].startswith(f"{SITE}/archive/") for li in headlines)
    assert all(REGIONS[0] in li.text or REGIONS[1] in li.text or REGIONS[2] in li.text or REGIONS[3] in li.text
               for li in headlines)
    footer = soup.select_one("td.footer")
    assert footer.find("a", string="Unsubscribe")["href"] == content.unsubscribe_url
    assert "Northern Desk Ltd, 1 Quay Street, Bergen, Norway" in footer.text
    # Contents: every SITREP, grouped by region, anchors to the body (or its headline).
    toc = soup.select("ol.toc a")
    assert len(toc) == 50 and sorted(p.text for p in soup.select("p.toc-label")) == sorted(REGIONS)
    for a in toc:
        assert soup.find(id=a["href"][1:]) is not None


def test_preheader_semantic_html_outlook_and_dark_mode(renderer):
    r = reader()
    content = renderer.render(digest.build_digest(r, "k", [view(1), view(2), view(3)]), personal(r))
    soup = BeautifulSoup(content.html, "html.parser")
    pre = soup.select_one("div.preheader")
    # The subject names the first title; the preview line names the others.
    assert "display: none" in pre["style"] and pre.text.strip().startswith("Also: Event 2: a development")
    assert content.subject.startswith("Event 3: a development") and "Event 2" not in content.subject
    assert soup.h1.text.strip() == content.subject
    assert len(soup.find_all("h2")) == 3 and len(soup.find_all("blockquote")) == 9
    # Padding sits on table cells, which Outlook for Windows keeps; no div carries a box.
    for cell in soup.select("td.quote-cell, td.sitrep-cell, td.content"):
        assert "padding" in cell["style"]
    assert not [d for d in soup.find_all("div") if "padding" in d.get("style", "")]
    assert soup.find("meta", attrs={"name": "color-scheme"})["content"] == "light dark"
    assert "@media (prefers-color-scheme: dark)" in content.html
    assert soup.find("a", string="View in browser")["href"].startswith(f"{SITE}/view/")
    assert "The Northern Desk" in soup.select_one("p.brand").text


def test_a_single_sitrep_shows_its_title_once(renderer):
    r = reader()
    title = "Ports reopen in the Red Sea after a week of closures"
    content = renderer.render(digest.build_digest(r, "k", [view(5, title=title)]), personal(r))
    body = BeautifulSoup(content.html, "html.parser").body
    assert body.text.count(title) == 1
    assert body.h1.a["href"].startswith(f"{SITE}/archive/5?t=")
    assert content.subject == title


def test_plain_text_has_contents_blank_lines_between_quotes_and_78_columns(renderer):
    r = reader(format="text", name="N" * 200, region_names=tuple(REGIONS))
    content = renderer.render(digest.build_digest(r, "k", [view(n) for n in range(1, 20)]), personal(r))
    assert content.html is None
    text = content.text
    for line in text.splitlines():
        assert len(line) <= 78 or re.fullmatch(r"\s*https?://\S+", line), line
    assert "CONTENTS" in text and "ALSO IN THIS BRIEFING" in text
    # Quotes are separated by a blank line.
    assert re.search(r"-- Dr\. Analyst 0\n\n  \"Why it matters", text)
    assert f"{SITE}/archive/1?t=" in text
    assert "Northern Desk Ltd" in text and "View in your browser:\nhttps://" in text


def test_archive_off_links_no_sitrep_anywhere():
    off = EmailRenderer(archive=links.ArchiveLinks(SITE, "k", mode="off"))
    r = reader()
    content = off.render(digest.build_digest(r, "k", [view(n) for n in range(1, 15)]), personal(r))
    assert "/archive" not in content.html and "/archive" not in content.text
