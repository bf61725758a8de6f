"""The `dispatch` command: a thin face over the package's modules."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlmodel import select

from dispatch import __version__, bootstrap, db, taxonomy
from dispatch.cli import admin_cmds, demo_cmd, preview_cmd, run_cmds, sitrep_cmds, subscriber_cmds, web_cmds
from dispatch.cli.common import AppContext, DispatchGroup, app_context, console, print_json
from dispatch.config import mask_url_password
from dispatch.models import Analyst

app = typer.Typer(
    cls=DispatchGroup,
    help="dispatch: deliver approved SITREPs to subscribers by email and Slack.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
app.add_typer(sitrep_cmds.app, name="sitrep")
app.add_typer(subscriber_cmds.app, name="subscriber")
app.add_typer(subscriber_cmds.slack_app, name="slack")
app.add_typer(admin_cmds.app, name="admin")


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
) -> None:
    """Settings come from DISPATCH_* environment variables and ./dispatch.toml;
    see `dispatch config`."""
    ctx.obj = AppContext({"database_url": database_url})


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database or upgrade it to the current schema, and seed the
    region catalogue. Safe to run again at any time."""
    settings = app_context(ctx).settings
    engine = db.create_engine(settings.database_url)
    before = db.current_revision(engine)
    added = bootstrap.init_database(engine)
    after = db.current_revision(engine)
    where = mask_url_password(settings.database_url)
    if before == after:
        console.print(f"{where}: schema {after} is current; {added} region(s) added", highlight=False)
    else:
        console.print(f"{where}: schema {before or 'none'} → {after}; {added} region(s) added", highlight=False)


@app.command("config")
def show_config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the effective settings, with secrets masked, and where the signing key comes from."""
    appctx = app_context(ctx)
    shown = appctx.settings.masked()
    key_from = bootstrap.key_source(appctx.engine, appctx.settings).describe()
    if as_json:
        print_json({**shown, "secret_key_source": key_from})
        return
    table = Table("setting", "environment variable", "value")
    for name, value in shown.items():
        table.add_row(name, f"DISPATCH_{name.upper()}", "—" if value is None else str(value))
    console.print(table)
    console.print(f"The key that signs reader links and admin sessions comes from {key_from}.", highlight=False)


@app.command()
def regions(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the region catalogue (slugs are what --region takes)."""
    with app_context(ctx).session() as session:
        rows = [{"slug": r.slug, "name": r.name} for r in taxonomy.all_regions(session)]
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
    with app_context(ctx).session() as session:
        rows = [{"id": a.id, "name": a.name, "title": a.title, "slug": a.slug}
                for a in session.exec(select(Analyst).order_by(Analyst.name)).all()]
    if as_json:
        print_json(rows)
        return
    table = Table("slug", "name", "title")
    for row in rows:
        table.add_row(row["slug"], row["name"], row["title"] or "")
    console.print(table)


# Registered last so that `dispatch --help` lists set-up commands first.
app.command("preview")(preview_cmd.preview)
app.command("run")(run_cmds.run)
app.command("web")(web_cmds.web)
app.command("status")(run_cmds.status)
app.command("log")(run_cmds.show_log)
app.command("retry")(run_cmds.retry)
app.command("sink")(run_cmds.sink)
app.command("demo")(demo_cmd.demo)
