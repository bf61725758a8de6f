"""`make test` on a machine without PostgreSQL: the PostgreSQL half is
skipped and the summary says so once; CI (DISPATCH_TEST_REQUIRE_POSTGRES=1)
gets an error instead, never a silent skip."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_ledger.py::test_planning_twice_inserts_nothing_new",
         "tests/test_ledger.py::test_claim_lease_and_finish"]


def closed_port() -> int:
    with socket.socket() as s:  # bound and closed again: nothing listens there now
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pytest(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def test_an_unreachable_postgres_skips_its_half_and_says_so_once():
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    result = run_pytest(DISPATCH_TEST_POSTGRES_URL=url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 2 deselected" in result.stdout
    notes = [line for line in result.stdout.splitlines() if "PostgreSQL test(s) skipped" in line]
    assert len(notes) == 1 and "does not answer" in notes[0], result.stdout


def test_ci_makes_an_unreachable_postgres_an_error():
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    result = run_pytest(DISPATCH_TEST_POSTGRES_URL=url, DISPATCH_TEST_REQUIRE_POSTGRES="1")
    assert result.returncode != 0
    assert "2 passed, 2 errors" in result.stdout
    assert "DISPATCH_TEST_REQUIRE_POSTGRES is set" in result.stdout


def test_ci_sets_the_requirement():
    assert "export DISPATCH_TEST_REQUIRE_POSTGRES=1" in (ROOT / ".ci" / "run").read_text()
