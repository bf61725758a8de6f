"""`dispatch demo`: the product end to end on the embedded default database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import typer
from pydantic import SecretStr
from rich.markup import escape

from dispatch import sitrep_text, sitreps, subscribers
from dispatch.cli import run_cmds, sitrep_cmds, subscriber_cmds
from dispatch.cli.common import app_context, console
from dispatch.config import SmtpSecurity, mask_url_password
from dispatch.scheduler import Runner
from dispatch.sink import SlackSink, SmtpSink
from dispatch.errors import DuplicateError
from dispatch.models import SitrepStatus, SubscriberKind
from dispatch.subscribers import Preferences

DEMO_ACTOR = "demo-editor"
DEMO_SLACK_TOKEN = "xoxb-demo-token"
DEMO_BOUNCES = "bounces@example.org"
DEMO_BOUNCING = "amara.diallo@example.org"  # the sink answers her mail with a bounce

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


def demo(
    ctx: typer.Context,
    output: Path = typer.Option(Path("demo-output"), "--output", help="Where the sinks keep what they receive."),
) -> None:
    """The product end to end on the embedded database: import the sample
    SITREPs, add readers and two Slack channels, approve, start local SMTP and
    Slack sinks, run one delivery pass and show the log. Safe to re-run."""
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
    sitrep_cmds.list_(ctx, status=None, search=None, limit=100, after=None, as_json=False)
    subscriber_cmds.list_(ctx, region=None, status=None, kind=None, search=None, limit=100, after=None,
                          as_json=False)
    _deliver(ctx, output)


def _deliver(ctx: typer.Context, output: Path) -> None:
    """Start the local sinks, point dispatch at them and run one pass."""
    from dispatch.inbound import receiver
    from dispatch.sink import BouncingHandler

    appctx = app_context(ctx)
    settings = appctx.settings.model_copy(update={"bounce_address": DEMO_BOUNCES,
                                                  "mail_from": "Dispatch Briefings <briefings@example.org>"})
    # `dispatch inbound` on a free port, and a sink that bounces one reader's mail to it.
    inbound = receiver.InboundServer(receiver.build_inbox(settings, appctx.engine), port=0).start()
    handler = BouncingHandler(output / "mail", bounce_for=DEMO_BOUNCING, relay=(inbound.host, inbound.port))
    smtp = SmtpSink(output / "mail", handler=handler).start()
    slack = SlackSink(output / "slack", token=DEMO_SLACK_TOKEN).start()
    settings = settings.model_copy(update={
        "smtp_host": smtp.host, "smtp_port": smtp.port, "smtp_security": SmtpSecurity.none,
        "smtp_username": None, "smtp_password": None, "mail_from": "Dispatch Briefings <briefings@example.org>",
        "slack_base_url": slack.base_url, "slack_bot_token": SecretStr(DEMO_SLACK_TOKEN),
        "slack_min_interval": 0.0})
    # Every reader's next window is tomorrow morning, their time: run as of then.
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    console.print(f"\n[bold]run --once[/] as if it were {when.isoformat()}, so that every reader's "
                  "next window is due", highlight=False)
    runner = Runner(settings, appctx.engine, clock=lambda: when)
    try:
        summary = runner.run_once()
        handler.wait()
    finally:
        runner.close()
        smtp.stop()
        slack.stop()
        inbound.stop()
    run_cmds.print_summary(summary)
    with appctx.session() as session:
        bounced = subscribers.find_by_address(session, DEMO_BOUNCING)
        shown = f"{bounced.status.value} ({bounced.status_reason})" if bounced else "not there"
    console.print(f"\n[bold]A bounce arrived[/]: the sink answered {DEMO_BOUNCING} with a DSN to the VERP "
                  f"return path; `dispatch inbound` read it, and the reader is now {escape(shown)}", highlight=False)
    run_cmds.show_log(ctx, status=None, subscriber=None, since=None, limit=50, after=None,
                      delivery=None, as_json=False)
    mails = sorted((output / "mail").glob("*.eml"))
    posts = sorted((output / "slack").rglob("*.json"))
    console.print(f"\n[bold]Delivered emails[/] ({len(mails)}): {output / 'mail'}/*.eml — open one in a mail "
                  f"client, or see the next one with `dispatch preview kenji.sato@example.org --html next.html`\n"
                  f"[bold]Slack posts[/] ({len(posts)}): {output / 'slack'}/<channel>/*.json (Block Kit payloads)\n"
                  "[bold]In a browser[/]: `dispatch admin create YOU`, then `dispatch web` and open "
                  "http://127.0.0.1:8000/admin (readers subscribe at /subscribe)",
                  highlight=False)
