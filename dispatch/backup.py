"""Backups of the embedded SQLite database, and restoring one.

``backup`` uses SQLite's online backup API in one step: it reads a single
consistent snapshot (under WAL, `dispatch run` goes on writing meanwhile)
into a new file, checks it, and only then gives it its name, so a backup
file is never half written. ``restore`` copies a checked backup into an
empty database only: restoring over live data would lose or repeat
deliveries. PostgreSQL has its own tools; for it the commands to use are
named instead (``pg_dump`` / ``pg_restore``).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from dispatch import db
from dispatch.errors import DispatchError, InputError

SQLITE_HEADER = b"SQLite format 3\x00"


class PostgresBackupRefused(InputError):
    """On PostgreSQL: the message is the command to use instead."""


@dataclass(frozen=True)
class Copied:
    source: str
    target: Path
    pages: int
    revision: str | None


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL; None for a server database."""
    url = db.normalise_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise InputError("database_url: an in-memory database cannot be backed up or restored")
    return Path(url.database).expanduser()


def pg_dump_command(database_url: str, file: Path) -> str:
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=True)
    return f"pg_dump --format=custom --file={shlex.quote(str(file))} {shlex.quote(url)}"


def pg_restore_command(database_url: str, file: Path) -> str:
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=True)
    return f"pg_restore --no-owner --exit-on-error --dbname={shlex.quote(url)} {shlex.quote(str(file))}"


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


def _check(conn: sqlite3.Connection, what: str) -> None:
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        raise InputError(f"{what} is damaged: {'; '.join(problems)[:300]}")


def _private_new(path: Path) -> None:
    """An empty file only its owner can read: it will hold readers' addresses."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def backup(database_url: str, target: Path) -> Copied:
    """Copy the SQLite database to ``target`` (a new file), consistently,
    while other processes read and write it."""
    source = sqlite_path(database_url)
    if source is None:
        raise PostgresBackupRefused(
            "dispatch backup copies SQLite databases only; back up PostgreSQL with its own tool:\n  "
            + pg_dump_command(database_url, target))
    if not source.is_file():
        raise InputError(f"database_url: there is no database at {source}")
    if target.exists():
        raise InputError(f"FILE: {target} exists already; name a new file")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    _private_new(partial)
    try:
        # Read-only, by URI: a mistyped path is an error here, never a new empty database.
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: the whole database from one read snapshot
            # One self-contained file, whatever the source's journal mode.
            dst.execute("PRAGMA journal_mode=DELETE")
            _check(dst, "the backup")
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
            revision = _revision(dst)
        finally:
            dst.close()
            src.close()
        if revision is None:
            raise DispatchError(f"{source} holds no dispatch schema: nothing to back up")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Copied(source=str(source), target=target, pages=pages, revision=revision)


def _empty(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return True
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    finally:
        conn.close()


def restore(backup_file: Path, database_url: str) -> Copied:
    """Copy a backup into the configured database, which must be empty (or not exist)."""
    target = sqlite_path(database_url)
    if target is None:
        raise PostgresBackupRefused(
            "dispatch restore writes SQLite databases only; restore PostgreSQL into an empty database with:\n  "
            + pg_restore_command(database_url, backup_file))
    if not backup_file.is_file():
        raise InputError(f"FILE: {backup_file} is not a file")
    with backup_file.open("rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise InputError(f"FILE: {backup_file} is not a SQLite database (a `dispatch backup` file)")
    if not _empty(target):
        raise InputError(f"database_url: {target} is not empty; restore only into a new database "
                         "(name another file with --database-url)")
    src = sqlite3.connect(f"{backup_file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        try:
            _check(src, f"FILE: {backup_file}")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"FILE: {backup_file} cannot be read as a database: {exc}") from exc
        revision = _revision(src)
        if revision is None:
            raise InputError(f"FILE: {backup_file} holds no dispatch schema")
        if not db.known_revision(revision):
            raise InputError(f"FILE: {backup_file} is at schema {revision}, which this version of dispatch "
                             "does not know (a newer release made it): restore it with that release")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            _private_new(target)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
            _check(dst, "the restored database")
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    return Copied(source=str(backup_file), target=target, pages=pages, revision=revision)
