"""`dispatch preview`: what a subscriber would receive next."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape

from dispatch import compose, fields, subscribers
from dispatch.cli.common import EXIT_BAD_INPUT, app_context, console, fail, print_json


def _parse_at(value: str, tz: str) -> datetime:
    return fields.parse_instant(value, field="--at", default_zone=ZoneInfo(tz), to_act_at=True)


def _local(moment: datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%a %d %b %Y %H:%M %Z")


def preview(
    ctx: typer.Context,
    ident: str = typer.Argument(..., metavar="SUBSCRIBER", help="Subscriber id or address."),
    at: str = typer.Option(None, "--at", metavar="DATETIME",
                           help="Preview as of this moment (ISO-8601; without an offset it is the "
                                "subscriber's local time). Default: now."),
    html: Path = typer.Option(None, "--html", metavar="FILE", help="Write the HTML email to FILE."),
    as_json: bool = typer.Option(False, "--json", help="Print the Slack payloads or email parts as JSON."),
) -> None:
    """Show what a subscriber would receive in their next window. Nothing is sent or recorded."""
    appctx = app_context(ctx)
    with appctx.session() as session:
        subscriber = subscribers.get(session, ident)
        now = _parse_at(at, subscriber.timezone) if at else datetime.now(timezone.utc)
        result = compose.preview(session, subscriber.id, now=now, status=subscriber.status)
    r = result.recipient
    composer = compose.Composer(appctx.settings, appctx.engine) if result.digest else None
    if as_json:
        data = {"subscriber": r.address, "cadence": r.cadence, "window_start": result.window_start.isoformat(),
                "window_end": result.window_end.isoformat(), "would_send": result.digest is not None,
                "reason": result.reason}
        if composer:
            # "deliveries": all that would go out next (an immediate reader: one per SITREP);
            # "slack"/"email": the first of them, as before.
            data["deliveries"] = [_as_json(composer, r.kind, d) for d in result.digests]
            data.update(data["deliveries"][0])
        print_json(data)
        return
    if r.cadence == "immediate":
        when = "as soon as a matching SITREP is approved"
    else:
        when = f"{_local(result.window_end, r.timezone)} (window since {_local(result.window_start, r.timezone)})"
    shown_format = "Slack" if r.kind == "slack" else r.format
    console.print(f"[bold]{escape(r.address)}[/] ({r.cadence}, {shown_format}): next delivery {when}",
                  highlight=False)
    if composer is None:
        console.print(f"[yellow]Nothing would be sent:[/] {escape(result.reason)}.", highlight=False)
        return
    if len(result.digests) > 1:
        console.print(f"{len(result.digests)} SITREPs would go out, each on its own (--html writes the first):\n",
                      highlight=False)
    for number, digest_ in enumerate(result.digests):
        if number:
            console.print("\n" + "─" * 60 + "\n", highlight=False)
        _show(composer, r.kind, digest_, html=html if number == 0 else None)


def _as_json(composer: compose.Composer, kind: str, digest_) -> dict:
    if kind == "slack":
        return {"slack": [{"text": m.text, "blocks": list(m.blocks)} for m in composer.slack(digest_).messages]}
    email = composer.email(digest_)
    return {"email": {"subject": email.subject, "text": email.text, "html": email.html}}


def _show(composer: compose.Composer, kind: str, digest_, *, html: Path | None) -> None:
    if kind == "slack":
        messages = composer.slack(digest_).messages
        for number, message in enumerate(messages, start=1):
            console.print(f"[bold]message {number}/{len(messages)}[/] ({len(message.blocks)} blocks): "
                          f"{escape(message.text)}", highlight=False)
        return
    email = composer.email(digest_)
    if html:
        if email.html is None:
            fail("this subscriber reads plain text; there is no HTML part", code=EXIT_BAD_INPUT)
        html.write_text(email.html, "utf-8")
        console.print(f"wrote the HTML email to {html} (open it in a browser)", highlight=False)
    console.print(f"[bold]Subject:[/] {escape(email.subject)}\n", highlight=False)
    console.print(escape(email.text), highlight=False)
