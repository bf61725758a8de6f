"""`dispatch subscriber …` and `dispatch slack …`: the people and channels
that receive digests, with their preferences."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from dispatch import csv_import, paging, subscribers
from dispatch.cli.common import EXIT_BAD_INPUT, app_context, console, err_console, fail, print_json, split_values
from dispatch.models import Cadence, MailFormat, SubscriberKind, SubscriberStatus
from dispatch.subscribers import Preferences

app = typer.Typer(help="Manage email subscribers and their preferences.", no_args_is_help=True)
slack_app = typer.Typer(help="Manage Slack channels (channel IDs or incoming-webhook URLs).",
                        no_args_is_help=True)

NAME = typer.Option(None, "--name", help="Display name.")
REGION = typer.Option(None, "--region", "-r",
                      help="Region slug or name; repeat or comma-separate. None: every region.")
ANALYST = typer.Option(None, "--analyst", "-a",
                       help="Analyst name ('Robert Walsh') or slug; repeat or comma-separate. None: all.")
CADENCE = typer.Option(None, "--cadence", help="immediate | daily | weekly  [default: daily]")
AT = typer.Option(None, "--at", help="Local delivery time, HH:MM  [default: 07:00]")
TZ = typer.Option(None, "--tz", help="IANA time zone, e.g. Europe/London  [default: UTC]")
WEEKDAY = typer.Option(None, "--weekday", help="Day of a weekly digest: mon … sun  [default: mon]")
FORMAT = typer.Option(None, "--format", help="html | text  [default: html]")
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")


def _prefs(name, region, analyst, cadence, at, tz, weekday, fmt) -> Preferences:
    return Preferences(
        name=name, regions=split_values(region), analysts=split_values(analyst),
        cadence=cadence.value if isinstance(cadence, Cadence) else cadence,
        send_at=at, timezone=tz, weekday=weekday,
        format=fmt.value if isinstance(fmt, MailFormat) else fmt,
    )


def _describe(data: dict) -> str:
    when = {"immediate": "as soon as approved", "daily": f"daily at {data['at']} {data['tz']}",
            "weekly": f"weekly on {data['weekday']} at {data['at']} {data['tz']}"}[data["cadence"]]
    regions = ", ".join(data["regions"]) or "all regions"
    analysts = ", ".join(data["analysts"]) or "all analysts"
    return f"{regions}; {analysts}; {when}; {data['format']}"


def _print_table(rows: list[dict]) -> None:
    table = Table("id", "kind", "address", "name", "status", "regions", "analysts", "cadence", "when")
    for d in rows:
        when = "—" if d["cadence"] == "immediate" else f"{d['at']} {d['tz']}"
        if d["cadence"] == "weekly":
            when = f"{d['weekday'][:3]} {when}"
        table.add_row(str(d["id"]), d["kind"], escape(d["address"]), escape(d["name"]), d["status"],
                      ", ".join(d["regions"]) or "all", ", ".join(d["analysts"]) or "all",
                      d["cadence"], when)
    console.print(table)


def _add(ctx, kind, address, prefs) -> None:
    appctx = app_context(ctx)
    with appctx.session() as session:
        data = subscribers.as_dict(subscribers.add_subscriber(
            session, address, kind=kind, prefs=prefs, webhook_hosts=appctx.settings.slack_webhook_hosts,
            private_networks=appctx.settings.outbound_private_networks))
    console.print(f"added #{data['id']} {escape(data['address'])}: {escape(_describe(data))}", highlight=False)


@app.command()
def add(
    ctx: typer.Context,
    address: str = typer.Argument(..., help="Email address."),
    name: str = NAME, region: list[str] = REGION, analyst: list[str] = ANALYST,
    cadence: Cadence = CADENCE, at: str = AT, tz: str = TZ, weekday: str = WEEKDAY,
    fmt: MailFormat = FORMAT,
) -> None:
    """Add an email subscriber (active at once: an admin vouches for them)."""
    _add(ctx, SubscriberKind.email, address, _prefs(name, region, analyst, cadence, at, tz, weekday, fmt))


@slack_app.command("add")
def slack_add(
    ctx: typer.Context,
    channel: str = typer.Argument(..., metavar="CHANNEL_ID|WEBHOOK_URL",
                                  help="A channel ID (posted with the bot token) or an incoming-webhook URL."),
    name: str = NAME, region: list[str] = REGION, analyst: list[str] = ANALYST,
    cadence: Cadence = CADENCE, at: str = AT, tz: str = TZ, weekday: str = WEEKDAY,
) -> None:
    """Add a Slack channel as a subscriber."""
    _add(ctx, SubscriberKind.slack, channel, _prefs(name, region, analyst, cadence, at, tz, weekday, None))


LIMIT = typer.Option(100, "--limit", min=1, max=1000, help="Rows to show (one page).")
AFTER = typer.Option(None, "--after", metavar="ID", help="Start after this id (the hint under a page).")


def _list(ctx, kind, status, region, search, as_json, *, limit: int = 100, after: str | None = None,
          again: str = "dispatch subscriber list") -> None:
    with app_context(ctx).session() as session:
        page = subscribers.subscriber_page(session, kind=kind, status=status, region=region, search=search,
                                           limit=limit, after=paging.parse_cursor(after, field="--after"))
        rows = [subscribers.as_dict(s) for s in page.items]
    if as_json:
        print_json(rows)
    elif not rows:
        console.print("no subscribers match")
    else:
        _print_table(rows)
    if page.next is not None:  # on stderr: --json output stays one array
        err_console.print(f"more: the same {again} with --after {page.next}", highlight=False)


@app.command("list")
def list_(
    ctx: typer.Context,
    region: str = typer.Option(None, "--region", "-r", help="Who receives this region (incl. 'all regions')."),
    status: SubscriberStatus = typer.Option(None, "--status"),
    kind: SubscriberKind = typer.Option(None, "--kind", help="email | slack"),
    search: str = typer.Option(None, "--search", "-s", help="The address or the name starts with this (any case)."),
    limit: int = LIMIT, after: str = AFTER,
    as_json: bool = JSON,
) -> None:
    """List subscribers (email and Slack) with their preferences, by id, a page at a time."""
    _list(ctx, kind, status, region, search, as_json, limit=limit, after=after)


@slack_app.command("list")
def slack_list(ctx: typer.Context, limit: int = LIMIT, after: str = AFTER, as_json: bool = JSON) -> None:
    """List the Slack channels, by id, a page at a time."""
    _list(ctx, SubscriberKind.slack, None, None, None, as_json, limit=limit, after=after,
          again="dispatch slack list")


@app.command()
def show(ctx: typer.Context, ident: str = typer.Argument(..., metavar="ID|ADDRESS"), as_json: bool = JSON) -> None:
    """Show one subscriber."""
    with app_context(ctx).session() as session:
        data = subscribers.as_dict(subscribers.get(session, ident))
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        console.print(f"[bold]{key:>13}[/]  {escape(str(shown if shown not in ('', None, []) else '—'))}",
                      highlight=False)


@app.command()
def edit(
    ctx: typer.Context,
    ident: str = typer.Argument(..., metavar="ID|ADDRESS"),
    name: str = NAME, region: list[str] = REGION, analyst: list[str] = ANALYST,
    cadence: Cadence = CADENCE, at: str = AT, tz: str = TZ, weekday: str = WEEKDAY,
    fmt: MailFormat = FORMAT,
    status: SubscriberStatus = typer.Option(None, "--status", help="e.g. disabled to pause, active to resume."),
    all_regions: bool = typer.Option(False, "--all-regions", help="Clear the region filter."),
    all_analysts: bool = typer.Option(False, "--all-analysts", help="Clear the analyst filter."),
    force: bool = typer.Option(False, "--force", help="With --status active: re-activate a reader who "
                                                      "unsubscribed themselves (only on their written request)."),
) -> None:
    """Change a subscriber's preferences or status; options not given stay as they are."""
    prefs = _prefs(name, region, analyst, cadence, at, tz, weekday, fmt)
    if all_regions:
        prefs.regions = []
    if all_analysts:
        prefs.analysts = []
    with app_context(ctx).session() as session:
        data = subscribers.as_dict(subscribers.edit_subscriber(session, ident, prefs, status=status,
                                                                         force=force))
    console.print(f"#{data['id']} {escape(data['address'])} [{data['status']}]: {escape(_describe(data))}",
                  highlight=False)


@app.command()
def remove(
    ctx: typer.Context,
    ident: str = typer.Argument(..., metavar="ID|ADDRESS"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a subscriber and its delivery log. To stop sending but keep the
    history, use `subscriber edit ID --status disabled` instead."""
    with app_context(ctx).session() as session:
        target = subscribers.get(session, ident)
        if not yes and not typer.confirm(f"Delete #{target.id} {target.address} and its delivery log?"):
            raise typer.Exit(1)
        subscribers.remove_subscriber(session, target.id)
    console.print(f"removed #{target.id} {escape(target.address)}", highlight=False)


class _CountingReader:
    """The file as import_csv streams it, telling a progress bar how far it got."""

    def __init__(self, stream, advance):
        self._stream, self._advance = stream, advance

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._advance(len(chunk))
        return chunk


@contextmanager
def _import_progress(stream):
    """(source, on_batch) for import_csv: with a progress bar for checking the
    file (by bytes read) and for adding the rows (by batch) on a terminal;
    the plain stream and no callback when the output is not one."""
    if not (console.is_terminal and err_console.is_terminal):
        yield stream, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    size = os.fstat(stream.fileno()).st_size
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console.real, transient=True) as progress:
        checking = progress.add_task("checking rows (bytes)", total=size)
        adding = progress.add_task("adding rows", total=None, visible=False)

        def on_batch(done: int, total: int) -> None:
            progress.update(checking, completed=size)
            progress.update(adding, completed=done, total=total, visible=True)

        yield _CountingReader(stream, lambda n: progress.advance(checking, n)), on_batch


@app.command("import")
def import_csv(ctx: typer.Context, csv_file: Path = typer.Argument(..., metavar="CSV")) -> None:
    """Import subscribers from CSV: a header row; `email` required; optional name,
    regions, analysts (each ';'-separated), cadence, at, tz, weekday, format, status
    (kept as given: an unsubscribed reader stays unsubscribed) and kind (email or
    slack; default email, the address then a channel ID or webhook URL).
    Good rows go in; rejected rows are listed with line numbers (exit code 2).
    At most 64 MB; rows are checked first, then added in short batches."""
    try:
        stream = csv_file.open("rb")
    except OSError as exc:
        fail(f"{csv_file}: cannot read it: {exc.strerror or exc}", code=EXIT_BAD_INPUT)
    appctx = app_context(ctx)
    engine, settings = appctx.engine, appctx.settings
    appctx.set_actor()  # the import's audit entry names who ran it
    with stream, _import_progress(stream) as (source, on_batch):
        report = csv_import.import_csv(engine, source, limit=csv_import.MAX_CLI_CSV_BYTES,
                                       webhook_hosts=settings.slack_webhook_hosts,
                                       private_networks=settings.outbound_private_networks, on_batch=on_batch,
                                       file_name=csv_file.name)
    console.print(f"{len(report.added)} added, {len(report.already_there)} already there, "
                  f"{len(report.rejected)} rejected")
    for line, address in report.already_there:
        console.print(f"  line {line}: {escape(address)} is already subscribed — skipped", highlight=False)
    for line, reason in report.rejected:
        err_console.print(f"  line {line}: {escape(reason)}", highlight=False)
    if report.ignored_columns:
        err_console.print(f"ignored unknown columns: {escape(', '.join(report.ignored_columns))}")
    if report.rejected:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command("export")
def export_csv(
    ctx: typer.Context,
    csv_file: str = typer.Argument("-", metavar="CSV", help="File to write, or - for standard output."),
) -> None:
    """Export subscribers and Slack channels as CSV, with every column `subscriber import`
    reads (status and kind included): importing the file into a fresh database gives the
    same list. Streamed: any size in constant memory."""
    from dispatch import csv_export

    count = 0

    def counted():
        nonlocal count
        for cells in csv_export.rows(app_context(ctx).engine):
            count += 1
            yield cells

    if csv_file == "-":
        for text in csv_export.text_chunks(counted()):
            sys.stdout.write(text)
        return
    target = Path(csv_file)
    partial = target.with_name(f".{target.name}.partial")
    try:
        # 0600: the list holds readers' addresses and Slack webhook URLs, each its own credential.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a partial file left from before keeps no wider mode
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            for text in csv_export.text_chunks(counted()):
                out.write(text)
        partial.replace(target)  # a failed export leaves no half-written file
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"{csv_file}: cannot write it: {exc.strerror or exc}", code=EXIT_BAD_INPUT)
    console.print(f"wrote {count} subscriber(s) to {escape(csv_file)}", highlight=False)
