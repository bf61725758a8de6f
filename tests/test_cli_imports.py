"""The CLI's import graph: `dispatch --help` and a command's own --help load
typer and rich, not the database, web, Slack or SMTP libraries; the simple
read commands (`sitrep list`, `regions`, `analysts`) load SQLAlchemy's Core
but not its ORM, SQLModel or the models (issue 14); `dispatch run` on SQLite
loads no PostgreSQL dialect, web or migration module (issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer
import typer.main
from typer.core import TyperCommand

HEAVY = ["sqlalchemy", "sqlmodel", "fastapi", "starlette", "jinja2", "uvicorn", "slack_sdk", "aiosmtpd",
         "alembic", "argon2", "zxcvbn", "css_inline", "pydantic_settings"]

PROBE = """
import json, sys
from typer.testing import CliRunner
from dispatch.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"exit": result.exit_code, "output": result.output,
                  "loaded": sorted({m.split('.')[0] for m in sys.modules}), "modules": sorted(sys.modules)}))
"""

# What a read of a few rows does without (dispatch.read_tables): the ORM and
# SQLModel (with its pydantic models) are half of `sitrep list`'s start-up.
NOT_FOR_A_READ = ["sqlalchemy.orm", "sqlmodel", "dispatch.models", "dispatch.sitreps", "dispatch.bootstrap",
                  "dispatch.desk.audit", "dispatch.events.emit", "alembic", "fastapi", "jinja2", "uvicorn",
                  "slack_sdk", "aiosmtpd", "argon2", "css_inline"]


def loaded_after(*args: str, env: dict[str, str] | None = None) -> dict:
    # A fresh interpreter: this process has imported everything already.
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True,
                          env=None if env is None else {**os.environ, **env})
    return json.loads(done.stdout)


def second_click(result: dict) -> list[str]:
    """The `click` package, where typer brings its own click (typer._click,
    since typer 0.26): dispatch.cli.lazy's stand-in commands imported it
    beside typer's on every start."""
    return ["click"] if "typer._click" in result["modules"] else []


def test_help_imports_no_heavy_library():
    result = loaded_after("--help")
    assert result["exit"] == 0 and "subscriber" in result["output"]
    assert [m for m in HEAVY + second_click(result) if m in result["loaded"]] == []


def test_version_imports_no_heavy_library():
    result = loaded_after("--version")
    assert result["exit"] == 0
    assert [m for m in HEAVY if m in result["loaded"]] == []


@pytest.mark.parametrize("command", [["sitrep", "list"], ["sitrep", "list", "--json", "--status", "draft"],
                                     ["regions"], ["analysts", "--json"]])
def test_a_simple_read_needs_no_orm_models_web_slack_smtp_or_alembic(tmp_path, command):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    assert loaded_after("--database-url", url, "init")["exit"] == 0
    result = loaded_after("--database-url", url, *command)
    assert result["exit"] == 0, result["output"]
    assert "sqlalchemy" in result["modules"] and "pydantic_settings" in result["modules"]  # its own needs
    assert [m for m in NOT_FOR_A_READ if m in result["modules"]] == []


# What `dispatch run --once --json` on SQLite does without (issue 19): a
# PostgreSQL dialect option in the models imported SQLAlchemy's PostgreSQL
# dialect (with its asyncpg, psycopg and pg8000 modules) on every start, and
# the CLI's consoles imported rich's 40 modules for output that is JSON;
# slack-sdk was imported (and its client made) with a bot token configured,
# whether or not anything was posted to a channel (and a second click, see
# second_click).
NOT_FOR_A_RUN = ["sqlalchemy.dialects.postgresql", "psycopg", "alembic", "apscheduler", "fastapi", "starlette",
                 "uvicorn", "aiosmtpd", "argon2", "zxcvbn", "dispatch.web", "dispatch.inbound", "dispatch.csv_import",
                 "rich", "slack_sdk", "dispatch.adapters.slack_client"]


def test_a_run_on_sqlite_loads_no_postgresql_web_or_migration_module(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    assert loaded_after("--database-url", url, "init")["exit"] == 0
    result = loaded_after("--database-url", url, "run", "--once", "--json",
                          env={"DISPATCH_SLACK_BOT_TOKEN": "xoxb-configured-but-unused"})
    assert result["exit"] == 0, result["output"]
    assert json.loads(result["output"])["outcomes"] == {}
    assert "sqlalchemy.dialects.sqlite" in result["modules"]  # its own needs
    assert [m for m in NOT_FOR_A_RUN + second_click(result) if m in result["modules"]] == []


def test_a_read_of_a_database_behind_the_schema_upgrades_it_first(tmp_path):
    """As every command does on SQLite: the quick path is only for a current schema."""
    from dispatch import db

    url = f"sqlite:///{tmp_path / 'd.db'}"
    engine = db.create_engine(url)
    db.upgrade(engine, "0011")
    result = loaded_after("--database-url", url, "sitrep", "list")
    assert result["exit"] == 0 and "no SITREPs" in result["output"], result["output"]
    assert db.is_current(engine)
    engine.dispose()


def _real_commands():
    from dispatch.cli import app
    from dispatch.cli.lazy import load_command

    group = typer.main.get_command(app)
    return group, {name: load_command(name, entry) for name, entry in group.lazy_commands.items()}


def test_lazy_table_help_matches_each_command():
    """`dispatch --help` lists the table's help lines: they must be the commands' own."""
    group, real = _real_commands()
    for name, command in real.items():
        listed = TyperCommand(name, help=group.lazy_commands[name].help)
        assert listed.get_short_help_str(1000) == command.get_short_help_str(1000), name


@pytest.mark.parametrize("name", ["sitrep", "subscriber", "slack", "admin", "run", "preview"])
def test_lazy_commands_resolve_with_their_options(name):
    group, real = _real_commands()
    ctx = typer.Context(group)
    assert group.get_command(ctx, name).get_help(ctx) == real[name].get_help(ctx)


def test_scanned_head_is_alembics(engine):
    from dispatch import db

    assert db.scanned_head() == db.head_revision(engine)
