"""Shared fixtures: databases on SQLite and on the local PostgreSQL server.

PostgreSQL tests create a database of their own on the server at
DISPATCH_TEST_POSTGRES_URL (default: the local server, user postgres) and
drop it afterwards. When that server does not answer, they are skipped and
the summary says so once, so `make test` passes on a machine without
PostgreSQL; with DISPATCH_TEST_REQUIRE_POSTGRES=1 (`.ci/run` sets it) an
unreachable server is an error instead, so CI never skips them silently.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dispatch import bootstrap, db

FIXTURES = Path(__file__).parent / "fixtures"
POSTGRES_ADMIN_URL = os.environ.get(
    "DISPATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("DISPATCH_TEST_REQUIRE_POSTGRES", "") not in ("", "0")
_postgres_problem: list[str | None] = []  # worked out once per run: None when the server answers
_postgres_skipped: list[str] = []


def _postgres_unreachable() -> str | None:
    """Why the test server cannot be used, or None. A closed port answers at
    once; a silent host is given two seconds, not the libpq default."""
    if not _postgres_problem:
        parsed = make_url(POSTGRES_ADMIN_URL)
        try:
            with psycopg.connect(_libpq_dsn(POSTGRES_ADMIN_URL), autocommit=True, connect_timeout=2):
                problem = None
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problem = f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432} does not answer ({reason})"
        _postgres_problem.append(problem)
    return _postgres_problem[0]


def _uses_postgres(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return "postgres_url" in getattr(item, "fixturenames", ()) or (
        callspec is not None and callspec.params.get("database_url") == "postgres")


def pytest_collection_modifyitems(config, items):
    """Without a server, the PostgreSQL half is left out (one line in the
    summary says so), rather than a skip line per test."""
    wanted = [item for item in items if _uses_postgres(item)]
    if not wanted or REQUIRE_POSTGRES or _postgres_unreachable() is None:
        return
    _postgres_skipped.extend(item.nodeid for item in wanted)
    config.hook.pytest_deselected(items=wanted)
    items[:] = [item for item in items if not _uses_postgres(item)]


def pytest_terminal_summary(terminalreporter):
    if _postgres_skipped:
        terminalreporter.write_sep("=", "PostgreSQL", yellow=True)
        terminalreporter.write_line(
            f"{len(_postgres_skipped)} PostgreSQL test(s) skipped (deselected): {_postgres_problem[0]}. "
            "Set DISPATCH_TEST_POSTGRES_URL, or DISPATCH_TEST_REQUIRE_POSTGRES=1 to make this an error.")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No test reads the developer's own dispatch.toml or DISPATCH_* variables."""
    for name in list(os.environ):
        if name.startswith("DISPATCH_") and name != "DISPATCH_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("DISPATCH_CONFIG", str(tmp_path / "no-such-dispatch.toml"))
    # The tests written before the two-person rule import and approve as one
    # person; tests/test_two_person.py turns it on (it is on by default).
    monkeypatch.setenv("DISPATCH_TWO_PERSON_RULE", "false")
    # One sender process per `dispatch run` unless a test asks for more
    # (tests/test_sender_processes.py, the kill and lease tests with several).
    monkeypatch.setenv("DISPATCH_SENDERS", "1")


def _libpq_dsn(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def postgres_url(request):
    """A new, empty PostgreSQL database for one test."""
    problem = _postgres_unreachable()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{problem}, and DISPATCH_TEST_REQUIRE_POSTGRES is set", pytrace=False)
        _postgres_skipped.append(request.node.nodeid)
        pytest.skip(f"{problem}: PostgreSQL tests skipped")
    name = f"dispatch_test_{uuid.uuid4().hex[:12]}"
    admin = _libpq_dsn(POSTGRES_ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'subscribers.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    """Runs the test once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(database_url):
    engine = db.create_engine(database_url)
    bootstrap.init_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with db.session_scope(engine) as session:
        yield session


@pytest.fixture
def mail_sink(tmp_path):
    """A real SMTP server on loopback that keeps each message as a file."""
    from dispatch.sink import SmtpSink

    sink = SmtpSink(tmp_path / "mail").start()
    yield sink
    sink.stop()


@pytest.fixture
def web(database_url, engine, mail_sink, tmp_path):
    """The web app on a fresh database (SQLite and PostgreSQL), with a test client."""
    from tests.webtools import make_web

    harness = make_web(database_url, engine, mail_sink, tmp_path / "mail")
    with harness.client:
        yield harness


@pytest.fixture
def run(tmp_path, monkeypatch):
    """The `dispatch` command through typer's test runner, in a temporary folder."""
    from typer.testing import CliRunner

    from dispatch.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke
