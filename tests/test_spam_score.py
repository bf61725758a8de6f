"""SpamAssassin's local rules (``spamassassin -t -L``: no network tests)
score every kind of email dispatch sends at 0 or below: digests in HTML and
in plain text, a 50-SITREP digest, a single SITREP, and the confirmation
and reminder notices. The messages are the bytes the SMTP adapter puts on
the wire, caught by a local SMTP server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dispatch import digest, links, notices
from dispatch.adapters.smtp import SmtpAdapter
from dispatch.digest import Quote, Recipient, SitrepView
from dispatch.render import EmailRenderer, Personal, build_environment
from dispatch.sitrep_text import parse

from .servers import scripted_smtp

SPAMASSASSIN = shutil.which("spamassassin")
pytestmark = pytest.mark.skipif(SPAMASSASSIN is None, reason="SpamAssassin is not installed "
                                                               "(apt-get install spamassassin; .ci/run does)")
SAMPLES = sorted((Path(__file__).parent.parent / "dispatch" / "samples").glob("*.txt"))
SITE = "https://news.example.org"
SECRET = "spam-test-secret"
NOW = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)
BRAND = "The Northern Desk"
POSTAL = "Northern Desk Ltd, 1 Quay Street, 5003 Bergen, Norway"


def sample_views(count: int) -> list[SitrepView]:
    parsed = [parse(p.read_text()) for p in SAMPLES]
    views = []
    for n in range(count):
        p = parsed[n % len(parsed)]
        views.append(SitrepView(
            id=n + 1, title=p.title if n < len(parsed) else f"{p.title} ({n // len(parsed) + 1})",
            event_date=p.event_date, approved_at=NOW, regions=("global",), region_names=("Global",),
            summary=tuple(p.summary),
            commentary=tuple(Quote(q.analyst_slug, q.analyst_name, q.analyst_title, q.text) for q in p.commentary)))
    return views


def personal(r: Recipient) -> Personal:
    urls = links.subscriber_links(SITE, SECRET, subscriber_id=r.id, address=r.address)
    view = links.view_token(SECRET, delivery_id=r.id, subscriber_id=r.id, address=r.address)
    return Personal.for_recipient(r, preferences_url=urls.preferences_url, unsubscribe_url=urls.unsubscribe_url,
                                  view_url=f"{SITE}/view/{view}")


def contents():
    env = build_environment()
    renderer = EmailRenderer(environment=env, brand=BRAND, postal_address=POSTAL,
                             archive=links.ArchiveLinks(SITE, SECRET, mode="readers"))
    html_reader = Recipient(id=1, kind="email", address="ana@example.org", name="Ana Ortiz")
    text_reader = Recipient(id=2, kind="email", address="ken@example.org", name="Ken Sato", format="text")
    four = sample_views(4)
    made = {
        "digest-html": renderer.render(digest.build_digest(html_reader, "daily:x", four), personal(html_reader)),
        "digest-text": renderer.render(digest.build_digest(text_reader, "daily:x", four), personal(text_reader)),
        "digest-50": renderer.render(digest.build_digest(html_reader, "daily:x", sample_views(50)),
                                     personal(html_reader)),
        "single-sitrep": renderer.render(digest.build_digest(html_reader, "sitrep:1", four[:1]),
                                         personal(html_reader)),
    }
    for kind in ("confirm", "remind"):
        made[f"notice-{kind}"] = notices.compose(env, kind=kind, brand=BRAND, public_url=SITE, secret=SECRET,
                                                 subscriber_id=3, address="new@example.org",
                                                 postal_address=POSTAL).content
    return made


@pytest.fixture(scope="module")
def wire(tmp_path_factory):
    """Each kind of email as it reached a local SMTP server."""
    folder = tmp_path_factory.mktemp("mail")
    sink, _ = scripted_smtp(folder)
    adapter = SmtpAdapter(host=sink.host, port=sink.port, mail_from=f"{BRAND} <news@example.org>",
                          list_id="<briefings.example.org>", timeout=10)
    try:
        sent = {}
        for n, (kind, content) in enumerate(contents().items(), start=1):
            adapter.send(f"reader{n}@example.org", content, delivery_id=n)
            sent[kind] = n
        adapter.close()
    finally:
        sink.stop()
    files = sorted(folder.glob("*.eml"))
    assert len(files) == len(sent)
    return {kind: files[n - 1].read_bytes() for kind, n in sent.items()}


@pytest.mark.parametrize("kind", ["digest-html", "digest-text", "digest-50", "single-sitrep", "notice-confirm",
                                  "notice-remind"])
def test_spamassassin_scores_it_at_or_below_zero(wire, kind, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}  # its user_prefs file goes here, not into the real home
    result = subprocess.run([SPAMASSASSIN, "-t", "-L"], input=wire[kind], capture_output=True, timeout=120,
                            env=env)
    report = result.stdout.decode("utf-8", "replace")
    score = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", report, flags=re.M)
    assert score, report[-2000:]
    assert float(score.group(1)) <= 0, report[report.find("Content analysis details"):]
