"""`dispatch backup` and `dispatch restore` (dispatch/backup.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from dispatch.cli.common import EXIT_BAD_INPUT, app_context, console, fail


def backup(ctx: typer.Context, file: Path = typer.Argument(..., metavar="FILE", help="A new file to write.")) -> None:
    """Copy the SQLite database to FILE, consistently, even while `dispatch run` sends."""
    from dispatch import backup as backups

    settings = app_context(ctx).settings
    try:
        copied = backups.backup(settings.database_url, file)
    except backups.PostgresBackupRefused as exc:
        fail(str(exc), code=EXIT_BAD_INPUT)
    console.print(f"backed up {copied.source} (schema {copied.revision}, {copied.pages} pages) to {copied.target}",
                  highlight=False)
    console.print("The key that signs reader links is not in the backup: keep a copy of it apart "
                  "(see `dispatch config`).", highlight=False)


def restore(ctx: typer.Context,
            file: Path = typer.Argument(..., metavar="FILE", help="A file written by `dispatch backup`.")) -> None:
    """Restore a backup into an empty (or new) SQLite database; `dispatch run` then resumes from it."""
    from dispatch import backup as backups

    settings = app_context(ctx).settings
    try:
        copied = backups.restore(file, settings.database_url)
    except backups.PostgresBackupRefused as exc:
        fail(str(exc), code=EXIT_BAD_INPUT)
    console.print(f"restored {copied.source} (schema {copied.revision}) into {copied.target}; "
                  "`dispatch init` brings it to the current schema", highlight=False)
