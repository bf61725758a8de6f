"""`dispatch audit`: the append-only log of every change, newest first."""

from __future__ import annotations

import typer

from dispatch.cli.common import app_context, console, err_console, print_json


def audit(
    ctx: typer.Context,
    since: str = typer.Option(None, "--since", metavar="WHEN", help="Only from this instant (ISO 8601; no offset: UTC)."),
    actor: str = typer.Option(None, "--actor", metavar="NAME", help="Only changes by this actor (its name)."),
    target: str = typer.Option(None, "--target", metavar="KIND:ID", help="Only changes of this, e.g. sitrep:12."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="Rows to show (one page)."),
    after: str = typer.Option(None, "--after", metavar="ID", help="Start after this id (the hint under a page)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """The audit log: who changed what and when (CLI, web, API and the system), newest first."""
    from rich.markup import escape
    from rich.table import Table

    from dispatch import fields, paging
    from dispatch.desk import audit as audit_log

    fields.check_text("--actor", actor or "", max_length=200)
    fields.check_text("--target", target or "", max_length=100)
    moment = fields.parse_instant(since, field="--since") if since else None
    with app_context(ctx).session() as session:
        page = audit_log.audit_page(session, since=moment, actor=actor, target=target, limit=limit,
                                    after=paging.parse_cursor(after, field="--after"))
        rows = [audit_log.as_dict(e) for e in page.items]
    if as_json:
        print_json(rows)
    elif not rows:
        console.print("no audit entries")
    else:
        table = Table("id", "at", "actor", "action", "target", "changes")
        for r in rows:
            changes = "; ".join(f"{k}: {v[0]!r} → {v[1]!r}" for k, v in r["changes"].items())
            table.add_row(str(r["id"]), r["at"][:19], escape(f"{r['actor_kind']}:{r['actor']}"), r["action"],
                          r["target"], escape(changes[:300]))
        console.print(table)
    if page.next is not None:
        err_console.print(f"more: the same dispatch audit with --after {page.next}", highlight=False)
