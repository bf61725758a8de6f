"""`dispatch admin`: the people who may use the web pages, and API tokens."""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from dispatch import admins, fields
from dispatch.cli.common import app_context, console, print_json

app = typer.Typer(help="Admin users for the web pages, and tokens for the JSON API.", no_args_is_help=True)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@app.command("create")
def create(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="Letters, digits and . _ @ -"),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from the first line of standard input."),
    reset_password: bool = typer.Option(False, "--reset-password", help="Give an existing admin a new password."),
    role: str = typer.Option("admin", "--role", help="viewer, editor, approver or admin."),
) -> None:
    """Create an admin who can sign in at /admin (asks for a password of at least 10 characters)."""
    from dispatch.desk import roles

    admins.check_username(username)
    chosen = roles.parse_role(role, field="--role")
    password = _read_password(password_stdin)
    with app_context(ctx).session() as session:
        if reset_password:
            admins.set_password(session, username, password)
            console.print(f"new password set for {username}", highlight=False)
        else:
            admins.create_admin(session, username, password, role=chosen)
            console.print(f"admin {username} ({chosen.value}) created; sign in at /admin/login", highlight=False)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the admins and when they last signed in."""
    with app_context(ctx).session() as session:
        rows = [{"username": a.username, "role": a.role.value, "created_at": a.created_at.isoformat(),
                 "last_login_at": a.last_login_at.isoformat() if a.last_login_at else None}
                for a in admins.list_admins(session)]
    _show(rows, ("username", "created_at", "last_login_at"), ("username", "created", "last sign-in"), as_json)


@app.command("remove")
def remove(ctx: typer.Context, username: str) -> None:
    """Remove an admin (their open sessions end at their next request)."""
    username = admins.check_username(username)  # also keeps undecodable bytes from the query
    with app_context(ctx).session() as session:
        admins.remove_admin(session, username)
    console.print(f"admin {username} removed", highlight=False)


@app.command("token")
def token(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="What the token is for, e.g. 'cms'."),
    revoke: bool = typer.Option(False, "--revoke", help="Revoke the token of this name instead."),
    role: str = typer.Option("admin", "--role", help="viewer, editor, approver or admin."),
) -> None:
    """Make an API token (printed once: store it now) or revoke one."""
    from dispatch.desk import roles

    chosen = roles.parse_role(role, field="--role")
    fields.check_text("name", name, max_length=100)  # before it reaches a query
    with app_context(ctx).session() as session:
        if revoke:
            admins.revoke_token(session, name)
            console.print(f"API token {name!r} revoked", highlight=False)
            return
        _, secret = admins.create_token(session, name, role=chosen)
    console.print(f"API token {name!r} (shown only now; send it as 'Authorization: Bearer <token>'):",
                  highlight=False)
    sys.stdout.write(secret + "\n")


@app.command("tokens")
def tokens(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List API tokens by name (the tokens themselves are not kept)."""
    with app_context(ctx).session() as session:
        rows = [{"name": t.name, "role": t.role.value, "created_at": t.created_at.isoformat(),
                 "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None}
                for t in admins.list_tokens(session)]
    _show(rows, ("name", "created_at", "last_used_at"), ("name", "created", "last used"), as_json)


def _show(rows: list[dict], keys: tuple[str, str, str], headings: tuple[str, ...], as_json: bool) -> None:
    """A name, when it was made and when it was last used (or never), as JSON or a table."""
    if as_json:
        print_json(rows)
        return
    table = Table(headings[0], "role", *headings[1:])
    name, made, used = keys
    for r in rows:
        table.add_row(r[name], r["role"], r[made][:16], (r[used] or "never")[:16])
    console.print(table)
