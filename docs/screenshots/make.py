"""Regenerate the README's screenshots of the reading experience.

    .venv/bin/python docs/screenshots/make.py [--out docs/screenshots]

Renders a digest of the shipped sample SITREPs with the real renderer and
an archive page from the real web app (on a throwaway SQLite database), and
photographs them with Debian's headless Chromium through Playwright: the
email at phone (375 px) and desktop (800 px) width, light and dark
(prefers-color-scheme), and the archive page.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dispatch import bootstrap, db, digest, links, sitreps, views  # noqa: E402
from dispatch.config import Settings  # noqa: E402
from dispatch.digest import Recipient  # noqa: E402
from dispatch.render import EmailRenderer, Personal  # noqa: E402
from dispatch.sitrep_text import parse  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SITE = "https://briefings.example.org"
SECRET = "screenshot-secret"
BRAND = "The Northern Desk"
POSTAL = "Northern Desk Ltd, 1 Quay Street, 5003 Bergen, Norway"


def seeded_settings(folder: Path) -> tuple[Settings, object]:
    url = f"sqlite:///{folder / 'screens.db'}"
    settings = Settings(database_url=url, secret_key=SECRET, public_url=f"{SITE}/", brand=BRAND,
                        postal_address=POSTAL, archive="public", mail_from="Briefings <news@example.org>")
    engine = db.create_engine(url)
    bootstrap.init_database(engine)
    approved = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
    with db.session_scope(engine) as session:
        for n, path in enumerate(sorted((ROOT / "dispatch" / "samples").glob("*.txt"))):
            s = sitreps.import_parsed(session, parse(path.read_text()), actor="desk").sitrep
            sitreps.approve_sitrep(session, s.id, by="chief", at=approved + timedelta(minutes=n))
    return settings, engine


def email_html(engine) -> str:
    with db.session_scope(engine) as session:
        approved = views.approved_sitreps(session)
    reader = Recipient(id=1, kind="email", address="ana@example.org", name="Ana Ortiz",
                       region_names=("Americas", "Europe and Eurasia"))
    urls = links.subscriber_links(SITE, SECRET, subscriber_id=1, address=reader.address)
    personal = Personal.for_recipient(reader, preferences_url=urls.preferences_url,
                                      unsubscribe_url=urls.unsubscribe_url, view_url=f"{SITE}/view/1.example")
    renderer = EmailRenderer(brand=BRAND, postal_address=POSTAL, archive=links.ArchiveLinks(SITE, SECRET))
    return renderer.render(digest.build_digest(reader, "daily:2026-11-27", approved), personal).html


def archive_html(settings, engine) -> str:
    from fastapi.testclient import TestClient

    from dispatch.web import create_app

    with TestClient(create_app(settings, engine), base_url="http://testserver") as client:
        response = client.get("/archive")
        response.raise_for_status()
        return response.text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        settings, engine = seeded_settings(Path(folder))
        mail, archive = email_html(engine), archive_html(settings, engine)
        engine.dispose()
    shots = [("email-phone-light", mail, 375, 1300, "light"), ("email-phone-dark", mail, 375, 1300, "dark"),
             ("email-desktop-light", mail, 800, 1100, "light"), ("email-desktop-dark", mail, 800, 1100, "dark"),
             ("archive", archive, 1100, 900, "light")]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for name, html, width, height, scheme in shots:
            page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme,
                                    device_scale_factor=1)
            page.set_content(html, wait_until="load")
            page.screenshot(path=str(args.out / f"{name}.png"))
            page.close()
            print(args.out / f"{name}.png")
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
