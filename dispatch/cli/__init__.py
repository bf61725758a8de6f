"""The `dispatch` command: a thin face over the package's modules.

Start-up is kept to typer and rich: every other import happens inside the
command that needs it, and the command modules are loaded lazily
(dispatch.cli.lazy), so `dispatch --help` imports no database, web, Slack or
SMTP library (tests/test_cli_imports.py).
"""

from __future__ import annotations

import typer

from dispatch import __version__
from dispatch.cli.common import AppContext, app_context, console, print_json
from dispatch.cli.entry import resume_collector
from dispatch.cli.lazy import LazyCommand, LazyGroup


class DispatchCli(LazyGroup):
    # In the order `dispatch --help` lists them, after the set-up commands below.
    lazy_commands = {
        "preview": LazyCommand("dispatch.cli.preview_cmd:preview",
                               "Show what a subscriber would receive in their next window."),
        "run": LazyCommand("dispatch.cli.run_cmds:run",
                           "Deliver digests: plan due windows and send them, logging one line per delivery."),
        "web": LazyCommand("dispatch.cli.web_cmds:web",
                           "Serve the web pages: /admin for admins, /subscribe and the signed subscriber "
                           "links, and the JSON API under /api (docs at /api/docs)."),
        "status": LazyCommand("dispatch.cli.run_cmds:status",
                              "Who is running (planner leader, live senders), how the queue stands, and "
                              "anything paused or held that needs a person."),
        "log": LazyCommand("dispatch.cli.run_cmds:show_log",
                           "The delivery log, newest first (or one delivery's attempts)."),
        "retry": LazyCommand("dispatch.cli.run_cmds:retry",
                             "Put a failed delivery (or all of them) back in the queue; a held one (its "
                             "outcome could not be recorded) only by its id, once you have looked."),
        "inbound": LazyCommand("dispatch.cli.inbound_cmd:inbound",
                               "Receive bounces, complaints and mailto unsubscribes (SMTP, LMTP or --stdin) "
                               "and act on them."),
        "sink": LazyCommand("dispatch.cli.run_cmds:sink",
                            "Run a local SMTP server and a local Slack API that keep what they receive, for "
                            "trying dispatch on a machine with no mail relay and no Slack."),
        "backup": LazyCommand("dispatch.cli.backup_cmds:backup",
                              "Copy the SQLite database to FILE, consistently, even while `dispatch run` sends."),
        "restore": LazyCommand("dispatch.cli.backup_cmds:restore",
                               "Restore a backup into an empty (or new) SQLite database; `dispatch run` then "
                               "resumes from it."),
        "demo": LazyCommand("dispatch.cli.demo_cmd:demo",
                            "The product end to end on the embedded database: import the sample SITREPs, "
                            "add readers and two Slack channels, approve, start local SMTP and Slack sinks, "
                            "run one delivery pass and show the log."),
        "sitrep": LazyCommand("dispatch.cli.sitrep_cmds:app", "Import, review, approve and withdraw SITREPs."),
        "subscriber": LazyCommand("dispatch.cli.subscriber_cmds:app",
                                  "Manage email subscribers and their preferences."),
        "slack": LazyCommand("dispatch.cli.subscriber_cmds:slack_app",
                             "Manage Slack channels (channel IDs or incoming-webhook URLs)."),
        "webhook": LazyCommand("dispatch.cli.webhook_cmds:app",
                               "Event webhooks: tell other systems what happened, signed (Standard Webhooks)."),
        "audit": LazyCommand("dispatch.cli.audit_cmd:audit",
                             "The audit log: who changed what and when (CLI, web, API and the system), newest first."),
        "admin": LazyCommand("dispatch.cli.admin_cmds:app",
                             "Admin users for the web pages, and tokens for the JSON API."),
    }


app = typer.Typer(
    cls=DispatchCli,
    help="dispatch: deliver approved SITREPs to subscribers by email and Slack.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"dispatch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    database_url: str = typer.Option(
        None, "--database-url", metavar="URL",
        help="Database to use (overrides DISPATCH_DATABASE_URL; default sqlite:///subscribers.db).",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    acting_as: str = typer.Option(None, "--as", metavar="NAME",
                                  help="Who does this, for the audit log and the two-person rule "
                                       "(default: DISPATCH_ACTOR, else your login name)."),
) -> None:
    """Settings come from DISPATCH_* environment variables and ./dispatch.toml;
    see `dispatch config`."""
    resume_collector()  # the command is loaded: start-up is over (dispatch.cli.entry)
    ctx.obj = AppContext({"database_url": database_url}, actor=acting_as)
    ctx.call_on_close(ctx.obj.close)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database or upgrade it to the current schema, and seed the
    region catalogue. Safe to run again at any time."""
    from dispatch import bootstrap, db
    from dispatch.config import mask_url_password

    settings = app_context(ctx).settings
    engine = db.create_engine(settings.database_url)
    try:
        before = db.current_revision(engine)
        added = bootstrap.init_database(engine)
        after = db.current_revision(engine)
    finally:
        engine.dispose()
    where = mask_url_password(settings.database_url)
    if before == after:
        console.print(f"{where}: schema {after} is current; {added} region(s) added", highlight=False)
    else:
        console.print(f"{where}: schema {before or 'none'} → {after}; {added} region(s) added", highlight=False)


@app.command("config")
def show_config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the effective settings, with secrets masked, and where the signing key comes from."""
    from rich.table import Table

    from dispatch import bootstrap

    appctx = app_context(ctx)
    shown = appctx.settings.masked()
    key_from = bootstrap.key_source(appctx.engine, appctx.settings).describe()
    warnings = appctx.settings.warnings()
    if as_json:
        print_json({**shown, "secret_key_source": key_from, "warnings": warnings})
        return
    table = Table("setting", "environment variable", "value")
    for name, value in shown.items():
        table.add_row(name, f"DISPATCH_{name.upper()}", "—" if value is None else str(value))
    console.print(table)
    console.print(f"The key that signs reader links and admin sessions comes from {key_from}.", highlight=False)
    for warning in warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


@app.command()
def regions(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the region catalogue (slugs are what --region takes)."""
    import sqlalchemy as sa
    from rich.table import Table

    from dispatch.read_tables import region

    with app_context(ctx).reading() as connection:  # Core: no models to import (issue 14)
        rows = [{"slug": slug, "name": name} for slug, name in
                connection.execute(sa.select(region.c.slug, region.c.name).order_by(region.c.slug))]
    if as_json:
        print_json(rows)
        return
    table = Table("slug", "name")
    for row in rows:
        table.add_row(row["slug"], row["name"])
    console.print(table)


@app.command()
def analysts(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the analysts known from imported SITREPs (what --analyst takes)."""
    import sqlalchemy as sa
    from rich.table import Table

    from dispatch.read_tables import analyst

    with app_context(ctx).reading() as connection:  # Core: no models to import (issue 14)
        rows = [dict(row) for row in connection.execute(
            sa.select(analyst.c.id, analyst.c.name, analyst.c.title, analyst.c.slug).order_by(analyst.c.name)).mappings()]
    if as_json:
        print_json(rows)
        return
    table = Table("slug", "name", "title")
    for row in rows:
        table.add_row(row["slug"], row["name"], row["title"] or "")
    console.print(table)
