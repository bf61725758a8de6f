"""`dispatch demo`: the product end to end on the embedded default database."""

from __future__ import annotations

from importlib import resources

import typer
from rich.markup import escape

from dispatch import sitrep_text, sitreps, subscribers
from dispatch.cli import sitrep_cmds, subscriber_cmds
from dispatch.cli.common import app_context, console
from dispatch.config import mask_url_password
from dispatch.errors import DuplicateError
from dispatch.models import SitrepStatus, SubscriberKind
from dispatch.subscribers import Preferences

DEMO_ACTOR = "demo-editor"

# Readers with different tastes, time zones and formats, plus two Slack channels.
DEMO_SUBSCRIBERS: list[tuple[SubscriberKind, str, Preferences]] = [
    (SubscriberKind.email, "ana.ortiz@example.org",
     Preferences(name="Ana Ortiz", regions=["americas"], timezone="America/New_York", send_at="07:00")),
    (SubscriberKind.email, "tom.becker@example.org",
     Preferences(name="Tom Becker", regions=["europe-eurasia", "east-asia-pacific"],
                 timezone="Europe/Berlin", send_at="06:30", format="text")),
    (SubscriberKind.email, "amara.diallo@example.org",
     Preferences(name="Amara Diallo", regions=["sub-saharan-africa"], timezone="Africa/Dakar",
                 send_at="08:00")),
    (SubscriberKind.email, "kenji.sato@example.org",
     Preferences(name="Kenji Sato", analysts=["Dana Whitfield"], timezone="Asia/Tokyo", send_at="07:30")),
    (SubscriberKind.email, "duty.desk@example.org",
     Preferences(name="Duty desk", cadence="immediate")),
    (SubscriberKind.slack, "C0DEMOGLOBAL", Preferences(name="#briefings", cadence="daily")),
    (SubscriberKind.slack, "C0DEMOASIA",
     Preferences(name="#asia-desk", regions=["east-asia-pacific"], cadence="immediate")),
]


def sample_files() -> list:
    folder = resources.files("dispatch") / "samples"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".txt")), key=lambda f: f.name)


def demo(ctx: typer.Context) -> None:
    """Set up the embedded database with sample SITREPs, subscribers and Slack
    channels, approve the SITREPs and show what is there. Safe to re-run."""
    appctx = app_context(ctx)
    console.print(f"[bold]database[/] {mask_url_password(appctx.settings.database_url)}", highlight=False)
    with appctx.session() as session:
        # Drafts first (they bring the analysts readers follow), then readers,
        # then approval: immediate readers get only what is approved after they join.
        imported = []
        for sample in sample_files():
            parsed = sitrep_text.parse(sample.read_text("utf-8"), source=sample.name)
            result = sitreps.import_parsed(session, parsed, actor=DEMO_ACTOR)
            imported.append(result.sitrep)
            verb = "imported" if result.created else "already there:"
            console.print(f"{verb} #{result.sitrep.id} {escape(result.sitrep.title)}", highlight=False)
        for kind, address, prefs in DEMO_SUBSCRIBERS:
            try:
                added = subscribers.add_subscriber(session, address, kind=kind, prefs=prefs)
                console.print(f"added {kind.value} subscriber #{added.id} {address}", highlight=False)
            except DuplicateError:
                console.print(f"already there: {address}", highlight=False)
        for sitrep in imported:
            if sitrep.status == SitrepStatus.draft:
                sitreps.approve_sitrep(session, sitrep.id, by=DEMO_ACTOR)
                console.print(f"approved #{sitrep.id}", highlight=False)
    console.print()
    sitrep_cmds.list_(ctx, status=None, search=None, as_json=False)
    subscriber_cmds.list_(ctx, region=None, status=None, kind=None, search=None, as_json=False)
