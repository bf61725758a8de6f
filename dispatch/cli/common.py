"""What every command shares: settings, the database, output and errors."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from dispatch.errors import DispatchError, InputError

# Only for annotations: `dispatch --help` must not import SQLAlchemy, pydantic
# settings or the database layer (tests/test_cli_imports.py holds that).
if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlmodel import Session

    from rich.console import Console

    from dispatch.config import Settings


class LazyConsole:
    """A rich Console made on first use: rich is some 40 modules, and a
    command whose output is JSON (`dispatch run --once --json`) may print
    nothing through it. ``real`` is the Console itself (for rich's own
    widgets, which take one)."""

    def __init__(self, **options: Any):
        self._options = options
        self._console: Console | None = None

    @property
    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


console = LazyConsole(soft_wrap=True)
err_console = LazyConsole(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class DispatchGroup(TyperGroup):
    """Turns our own errors into one clear line and an exit code, anywhere in
    the command tree, instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            fail(str(exc), code=EXIT_BAD_INPUT)
        except DispatchError as exc:
            fail(str(exc), code=EXIT_FAILED)
        except Exception as exc:
            problem = _database_problem(exc)
            if problem is None:
                raise
            fail(problem, code=EXIT_FAILED)


def _database_problem(exc: Exception) -> str | None:
    """One line for a database that cannot be reached (down, wrong host,
    refused login) or whose write lock another process holds past the busy
    timeout (SQLite), instead of a traceback; None for anything else."""
    if not type(exc).__module__.startswith("sqlalchemy"):
        return None  # only then is SQLAlchemy (already) imported: nothing loaded for this check
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        from dispatch.db import SQLITE_BUSY_TIMEOUT_MS

        return (f"the database is busy: another process has held its write lock for over "
                f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s (a long import, a backup, a stuck process?); nothing was "
                "changed by this command: try again when it is done")
    if not isinstance(exc, (OperationalError, InterfaceError)) or not exc.connection_invalidated and \
            "connect" not in str(exc.orig).lower():
        return None
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    return f"cannot use the database: {reason}"


def fail(message: str, *, code: int = EXIT_FAILED):
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class AppContext:
    """Built once per invocation; opened lazily so `--help` needs no database."""

    def __init__(self, overrides: dict[str, Any], *, actor: str | None = None):
        self._overrides = {k: v for k, v in overrides.items() if v is not None}
        # Who this invocation acts as (--as, else DISPATCH_ACTOR, else the OS user), for
        # the audit log and SITREP history; "system" for the delivery loop.
        self.actor = actor_name(actor)
        self.actor_kind = "cli"

    @cached_property
    def settings(self) -> Settings:
        from pydantic import ValidationError

        from dispatch.config import config_file_path, load_settings

        try:
            return load_settings(**self._overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
            )
            fail(f"invalid settings (environment or {config_file_path()}): {problems}", code=EXIT_BAD_INPUT)

    def warn_at_start(self) -> None:
        for warning in self.settings.warnings():
            err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)

    @cached_property
    def engine(self) -> Engine:
        """For any command that may write: opened by dispatch.bootstrap, which
        also registers the flush hooks every write needs (audit, events)."""
        from dispatch import bootstrap

        return bootstrap.open_engine(self.settings)

    @cached_property
    def read_engine(self) -> Engine:
        """For a command that only reads (``reading``): when the schema is
        current, the usual case, opened without the models, the write side's
        hooks or alembic; else as ``engine`` (which creates or upgrades an
        SQLite database, or refuses a server one, as for every command)."""
        from dispatch import db

        engine = db.configured_engine(self.settings)
        if db.is_current(engine):
            return engine
        engine.dispose()
        return self.engine

    def close(self) -> None:
        """At the end of the invocation: the actor does not outlive it (one
        process may run several), and the database connections it opened are
        closed now, in order (SQLite checkpoints its WAL), not left to the
        interpreter's exit (see dispatch.cli.entry)."""
        audit = sys.modules.get("dispatch.desk.audit")
        if audit is not None:
            audit.set_actor(audit.SYSTEM)
        for name in ("read_engine", "engine"):
            engine = self.__dict__.pop(name, None)
            if engine is not None:
                engine.dispose()

    def act_as(self, name: str | None) -> str:
        """A command's own --as, over the root one."""
        if name:
            from dispatch.desk import audit

            self.actor = actor_name(name)
            audit.set_actor(audit.Actor(self.actor_kind, self.actor))
        return self.actor

    def set_actor(self) -> None:
        """For work that opens its own sessions (a CSV import): it acts as this invocation's actor."""
        from dispatch.desk import audit

        audit.set_actor(audit.Actor(self.actor_kind, self.actor))

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection for a command that only reads a few rows
        (dispatch.read_tables): it starts in a fraction of the time a
        session needs, since it imports neither SQLModel nor the models."""
        from dispatch import db

        with db.read_connection(self.read_engine) as connection:
            yield connection

    @contextmanager
    def session(self) -> Iterator[Session]:
        from dispatch import db
        from dispatch.desk import audit

        audit.set_actor(audit.Actor(self.actor_kind, self.actor))
        with db.session_scope(self.engine) as session:
            yield session


def app_context(ctx: typer.Context) -> AppContext:
    return ctx.find_root().obj


ACTOR_MAX_CHARS = 200


def actor_name(explicit: str | None = None) -> str:
    """--as NAME, else DISPATCH_ACTOR, else the OS user; one line, bounded."""
    import os

    name = (explicit or os.environ.get("DISPATCH_ACTOR") or current_user()).strip()
    if not name or len(name) > ACTOR_MAX_CHARS or any(ch in name for ch in "\r\n\t"):
        raise InputError(f"--as/--by: a name of 1–{ACTOR_MAX_CHARS} characters on one line")
    return name


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "admin"


def split_values(values: list[str] | None) -> list[str] | None:
    """--region a --region b and --region a,b mean the same."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
