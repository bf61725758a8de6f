"""`dispatch webhook`: event webhooks (dispatch/events)."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from dispatch import fields
from dispatch.cli.common import app_context, console, print_json, split_values

app = typer.Typer(help="Event webhooks: tell other systems what happened, signed (Standard Webhooks).",
                  no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="https URL (plain http only to a loopback address)."),
    event: list[str] = typer.Option(..., "--event", metavar="TYPE",
                                    help="An event type to send (repeat, or comma-separate): sitrep.approved, "
                                         "sitrep.corrected, sitrep.withdrawn, delivery.sent, delivery.failed, "
                                         "subscriber.created, subscriber.unsubscribed, subscriber.bounced."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a webhook; its signing secret is shown once, here."""
    from dispatch.events import endpoints

    appctx = app_context(ctx)
    with appctx.session() as session:
        hook = endpoints.add(session, url, events=split_values(event),
                             private_networks=appctx.settings.outbound_private_networks)
        data = endpoints.as_dict(hook, with_secret=True)
    if as_json:
        print_json(data)
        return
    console.print(f"event webhook {data['id']} added for {', '.join(data['events'])}\n"
                  f"signing secret (shown once; verify webhook-signature with it): {data['secret']}",
                  highlight=False)


@app.command("list")
def list_webhooks(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """The event webhooks, with their secrets masked."""
    from dispatch.events import endpoints

    with app_context(ctx).session() as session:
        rows = [endpoints.as_dict(h) for h in endpoints.all_webhooks(session)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no event webhooks")
        return
    table = Table("id", "url", "events", "secret")
    for r in rows:
        table.add_row(str(r["id"]), escape(r["url"]), ", ".join(r["events"]), r["secret"])
    console.print(table)


@app.command("remove")
def remove(ctx: typer.Context, webhook_id: int = typer.Argument(..., metavar="ID", min=1, max=fields.MAX_ID)) -> None:
    """Remove a webhook; its undelivered events go with it."""
    from dispatch.events import endpoints

    with app_context(ctx).session() as session:
        endpoints.remove(session, webhook_id)
    console.print(f"event webhook {webhook_id} removed")
