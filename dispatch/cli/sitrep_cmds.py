"""`dispatch sitrep …`: import, list, show, approve, withdraw (or retract), tag, edit, correct."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from dispatch import fields, paging
from dispatch.cli.common import (
    EXIT_BAD_INPUT, app_context, console, err_console, fail, print_json, split_values,
)
from dispatch.enums import SitrepStatus
from dispatch.errors import ConflictError, InputError

# dispatch.sitreps (the models, SQLModel) is imported by the commands that
# change a SITREP or show one whole: `sitrep list` reads with Core alone
# (dispatch.sitrep_rows) and starts in half the time (tests/test_cli_imports.py).
if TYPE_CHECKING:
    from dispatch import sitrep_text

app = typer.Typer(help="Import, review, approve and withdraw SITREPs.", no_args_is_help=True)

BY_OPTION = typer.Option(None, "--as", "--by", metavar="NAME",
                         help="Who does this (recorded; the two-person rule compares it); "
                              "default: DISPATCH_ACTOR, else your login name.")
# Bounded as an id column is: a larger number is a usage error, not a database one.
ID_ARGUMENT = typer.Argument(..., metavar="ID", min=1, max=fields.MAX_ID)


def read_sitrep_file(path: Path) -> sitrep_text.ParsedSitrep:
    from dispatch import sitrep_text

    source = str(path)
    try:
        with path.open("rb") as file:
            # One byte past the limit is enough to refuse it: /dev/zero is never read whole.
            raw = file.read(sitrep_text.MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise sitrep_text.SitrepFormatError(f"cannot read the file: {exc.strerror}", source=source) from exc
    return sitrep_text.parse(sitrep_text.decode_source(raw, source=source), source=source)


@app.command("import")
def import_(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="SITREP text files.", show_default=False),
    approve: bool = typer.Option(False, "--approve", help="Approve each imported SITREP at once."),
    flash: bool = typer.Option(False, "--flash",
                               help="With --approve: approve each as a FLASH, sent at once to every matching "
                                    "reader whatever their cadence (as `sitrep approve --flash`)."),
    region: list[str] = typer.Option(None, "--region", "-r",
                                     help="Tag with these regions instead of the suggested ones."),
    by: str = BY_OPTION,
) -> None:
    """Import SITREP text files as drafts (or approved, with --approve; as a FLASH, with --approve --flash).

    Regions are suggested from the places each text names; change them with
    `dispatch sitrep tag`. Good files are imported even when others are bad;
    the bad ones are listed and the exit code is 2.
    """
    from dispatch import sitreps

    if flash and not approve:
        fail("--flash approves as a FLASH: give --approve too (or approve it later: sitrep approve ID --flash)",
             code=EXIT_BAD_INPUT)
    appctx = app_context(ctx)
    actor = appctx.act_as(by)
    bad = 0
    for path in files:
        try:
            parsed = read_sitrep_file(path)
            with appctx.session() as session:
                result = sitreps.import_parsed(
                    session, parsed, actor=actor, approve=approve, regions=split_values(region),
                    two_person=appctx.settings.two_person_rule, flash=flash)
                s = result.sitrep
                if result.created:
                    console.print(
                        f"imported [bold]#{s.id}[/] {escape(s.title)} ({s.event_date}) "
                        f"[{'FLASH · ' if s.flash else ''}{s.status.value}] regions: "
                        f"{', '.join(sitreps.region_slugs(s))}",
                        highlight=False,
                    )
                else:
                    console.print(f"{path}: already there as #{s.id} {escape(s.title)} — skipped",
                                  highlight=False)
        except (InputError, ConflictError) as exc:  # e.g. --approve of a retracted one: refused, the rest go on
            bad += 1
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    if bad:
        err_console.print(f"{bad} of {len(files)} file(s) not imported")
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: SitrepStatus = typer.Option(None, "--status", help="Only this status."),
    search: str = typer.Option(None, "--search", "-s", help="Text in the title or body."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="Rows to show (one page)."),
    after: str = typer.Option(None, "--after", metavar="ID", help="Start after this id (the hint under a page)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List SITREPs, newest first (by id), a page at a time."""
    from dispatch import sitrep_rows

    cursor = paging.parse_cursor(after, field="--after")
    with app_context(ctx).reading() as connection:
        page = sitrep_rows.page(connection, status=status, search=search, limit=limit, after=cursor)
    rows = page.items
    if as_json:
        print_json([sitrep_rows.as_dict(s, s.regions) for s in rows])
    elif not rows:
        console.print("no SITREPs" + (f" with status {status.value}" if status else ""))
    else:
        from rich.table import Table

        table = Table("id", "date", "status", "title", "regions", "approved by")
        for s in rows:
            until = sitrep_rows.embargoed_until(s)
            shown = f"scheduled for {until:%Y-%m-%d %H:%M} UTC" if until else s.status.value
            if s.flash:
                shown = f"FLASH · {shown}"
            table.add_row(str(s.id), s.event_date.isoformat(), shown, escape(s.title),
                          ", ".join(s.regions), s.approved_by or "")
        console.print(table)
    if page.next is not None:  # on stderr: --json output stays one array
        err_console.print(f"more: the same dispatch sitrep list with --after {page.next}", highlight=False)


@app.command()
def show(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show one SITREP: bullets, commentary, regions and its history."""
    from dispatch import sitreps

    with app_context(ctx).session() as session:
        s = sitreps.get(session, sitrep_id)
        data = sitreps.as_dict(s, full=True)
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]#{data['id']} {escape(data['title'])}[/]  {data['event_date']}  [{data['status']}]",
                  highlight=False)
    console.print(f"regions: {', '.join(data['regions'])}", highlight=False)
    console.print("\n[bold]What has Happened[/]")
    for bullet in data["summary"]:
        console.print(f"  • {escape(bullet)}", highlight=False)
    if data["commentary"]:
        console.print("\n[bold]Why it Matters[/]")
        for quote in data["commentary"]:
            who = " ".join(filter(None, [quote["title"], quote["analyst"]]))
            console.print(f"  “{escape(quote['text'])}”\n    — {escape(who)}\n", highlight=False)
    console.print("[bold]History[/]")
    for change in data["changes"]:
        console.print(f"  {change['at'][:19]}  {change['actor']}: {change['action']} {escape(change['detail'])}",
                      highlight=False)


@app.command()
def approve(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    release_at: str = typer.Option(None, "--release-at", metavar="WHEN",
                                   help="Embargo: nothing is sent before this instant (ISO 8601, e.g. "
                                        "2026-12-03T06:00Z; no offset: UTC)."),
    flash: bool = typer.Option(False, "--flash",
                               help="FLASH: send it at once to every matching reader, whatever their cadence "
                                    "(their next digest leaves it out); with --release-at, at the release."),
    by: str = BY_OPTION,
) -> None:
    """Approve a draft: it goes out in each subscriber's next window (after --release-at, if given),
    or with --flash to every matching reader at once."""
    from dispatch import sitreps

    when = fields.parse_instant(release_at, field="--release-at") if release_at else None
    with app_context(ctx).session() as session:
        s = sitreps.approve_sitrep(session, sitrep_id, by=app_context(ctx).act_as(by), release_at=when,
                                   two_person=app_context(ctx).settings.two_person_rule, flash=flash)
        scheduled = f", scheduled for {when:%Y-%m-%d %H:%M} UTC" if when else ""
        sending = (f"; FLASH: it goes to every matching reader {'at the release' if when else 'at once'}"
                   if flash else "")
        console.print(f"approved #{s.id} {escape(s.title)}{scheduled}{sending}", highlight=False)


@app.command()
def release(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    cancel: bool = typer.Option(False, "--cancel", help="Call the release off instead: back to a draft."),
    by: str = BY_OPTION,
) -> None:
    """Release an embargoed SITREP now (or cancel its release)."""
    from dispatch import sitreps

    with app_context(ctx).session() as session:
        actor = app_context(ctx).act_as(by)
        if cancel:
            s = sitreps.cancel_release(session, sitrep_id, by=actor)
            console.print(f"release of #{s.id} cancelled; it is a draft again", highlight=False)
        else:
            s = sitreps.release_sitrep(session, sitrep_id, by=actor)
            console.print(f"released #{s.id} {escape(s.title)} now", highlight=False)


@app.command()
def withdraw(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    reason: str = typer.Option("", "--reason", help="Why (recorded; with --retract, sent to readers)."),
    retract: bool = typer.Option(False, "--retract",
                                 help="A retraction: everyone who received it is told (their Slack posts "
                                      "replaced by a retraction notice, an email \"Retraction: <title>\")."),
    by: str = BY_OPTION,
) -> None:
    """Withdraw a SITREP: it is no longer delivered, even where already planned."""
    from dispatch import sitreps

    with app_context(ctx).session() as session:
        actor = app_context(ctx).act_as(by)
        if retract:
            from dispatch import revisions

            done = revisions.retract(session, sitrep_id, by=actor, reason=reason)
            console.print(f"retracted #{sitrep_id}: {done.notices} earlier reader(s) will be told "
                          "(dispatch run sends the notices)", highlight=False)
            return
        s = sitreps.withdraw_sitrep(session, sitrep_id, by=actor, reason=reason)
        console.print(f"withdrew #{s.id} {escape(s.title)}", highlight=False)


@app.command()
def tag(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    region: list[str] = typer.Option(..., "--region", "-r", help="Region slug or name; repeat or comma-separate."),
    by: str = BY_OPTION,
) -> None:
    """Set the regions of a SITREP (replacing the suggested ones)."""
    from dispatch import sitreps

    with app_context(ctx).session() as session:
        s = sitreps.tag_sitrep(session, sitrep_id, split_values(region), by=app_context(ctx).act_as(by))
        console.print(f"#{s.id} regions: {', '.join(sitreps.region_slugs(s))}", highlight=False)


@app.command()
def edit(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    title: str = typer.Option(None, "--title"),
    event_date: str = typer.Option(None, "--date", help="YYYY-MM-DD"),
    priority: int = typer.Option(None, "--priority", help="Higher comes first in a digest."),
    from_file: Path = typer.Option(None, "--from-file", help="Replace the content from corrected SITREP text."),
    by: str = BY_OPTION,
) -> None:
    """Edit a SITREP not yet released (one under embargo goes back to draft); every edit is recorded.
    A released SITREP is changed with `dispatch sitrep correct`."""
    from dispatch import sitreps

    parsed_date = None
    if event_date is not None:
        try:
            parsed_date = date.fromisoformat(event_date)
        except ValueError:
            fail(f"--date: {event_date!r} is not a date as YYYY-MM-DD", code=EXIT_BAD_INPUT)
    content = read_sitrep_file(from_file) if from_file else None
    with app_context(ctx).session() as session:
        changes_before = len(sitreps.get(session, sitrep_id).changes)
        s = sitreps.edit_sitrep(session, sitrep_id, by=app_context(ctx).act_as(by), title=title,
                                event_date=parsed_date, priority=priority, content=content)
        outcome = s.changes[-1].detail if len(s.changes) > changes_before else "nothing changed"
        console.print(f"#{s.id} {escape(s.title)}: {escape(outcome)}", highlight=False)


@app.command()
def correct(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    from_file: Path = typer.Option(..., "--from-file", help="The corrected SITREP, in the import format."),
    note: str = typer.Option(..., "--note", help="What was corrected and why (sent to earlier readers)."),
    region: list[str] = typer.Option(None, "--region", "-r", help="Re-tag it with these regions (default: as now)."),
    by: str = BY_OPTION,
) -> None:
    """Correct a released SITREP: a new revision, sent out once someone else approves it
    (dispatch sitrep approve-correction ID)."""
    from dispatch import revisions, sitreps

    parsed = read_sitrep_file(from_file)
    with app_context(ctx).session() as session:
        revision = revisions.correct(session, sitrep_id, parsed, by=app_context(ctx).act_as(by), note=note,
                                     regions=split_values(region) or None)
        shown = revisions.changes_of(revision, current=sitreps.get(session, sitrep_id))
        console.print(f"correction (revision {revision.number}) of #{sitrep_id} awaits approval: "
                      f"dispatch sitrep approve-correction {sitrep_id}", highlight=False)
        for change in shown:
            console.print(f"  {escape(change.line())}", highlight=False)


@app.command("approve-correction")
def approve_correction(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    by: str = BY_OPTION,
) -> None:
    """Approve the pending correction of a SITREP: it becomes the SITREP, and everyone who received it is told."""
    from dispatch import revisions

    appctx = app_context(ctx)
    with appctx.session() as session:
        done = revisions.approve_correction(session, sitrep_id, by=appctx.act_as(by),
                                            two_person=appctx.settings.two_person_rule)
        console.print(f"approved revision {done.revision.number} of #{sitrep_id}: {done.notices} earlier "
                      "reader(s) will be told (dispatch run sends the notices)", highlight=False)


@app.command("revisions")
def list_revisions(
    ctx: typer.Context,
    sitrep_id: int = ID_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """A SITREP's corrections and retraction, with what each changed."""
    from dispatch import revisions, sitreps

    with app_context(ctx).session() as session:
        current = sitreps.get(session, sitrep_id)
        data = [revisions.as_dict(r, current=current) for r in revisions.revisions(session, sitrep_id)]
    if as_json:
        print_json(data)
        return
    if not data:
        console.print(f"#{sitrep_id} has no corrections")
    for r in data:
        who = f"by {r['made_by']}" + (f", approved by {r['approved_by']}" if r["approved_by"] else ", pending")
        console.print(f"[bold]revision {r['revision']}[/] {r['kind']} {who}: {escape(r['note'])}", highlight=False)
        for change in r["diff"]:
            console.print(f"  {change['sign']} {change['part']}: {escape(change['text'])}", highlight=False)
