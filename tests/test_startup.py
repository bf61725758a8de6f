"""Start-up and exit of the `dispatch` process (issue 19): the collector is off
while a command's modules load and start-up's objects are frozen out of its
way (dispatch/cli/entry.py); connections are closed when the command ends;
the FLASH index keeps its predicate without the PostgreSQL dialect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import sqlalchemy as sa

from dispatch import db
from dispatch.models import Delivery

PROBE = """
import gc, json, os, sys
from dispatch.cli import common, entry

seen = {"collections_before_command": 0}
def count(phase, info):
    if phase == "start" and "enabled" not in seen:
        seen["collections_before_command"] += 1
gc.callbacks.append(count)
before = common.AppContext.__init__
def probe(self, *args, **kwargs):  # the root callback: the command is loaded, its work not begun
    seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
    before(self, *args, **kwargs)
common.AppContext.__init__ = probe
sys.argv = ["dispatch", *sys.argv[1:]]
try:
    entry.main()
finally:
    seen["frozen_at_exit"] = gc.get_freeze_count()
    loader = sys.modules.get("pydantic.plugin._loader")
    seen["plugins_scanned"] = loader is not None and loader._plugins is not None
    seen["plugins_setting"] = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    sys.stderr.write("SEEN " + json.dumps(seen) + "\\n")
"""


def probe(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          env=env)
    line = next(x for x in done.stderr.splitlines() if x.startswith("SEEN "))
    return done, json.loads(line.removeprefix("SEEN "))


def test_a_command_loads_without_collections_then_collects_with_start_up_frozen(tmp_path):
    done, seen = probe("--database-url", f"sqlite:///{tmp_path / 'd.db'}", "regions", "--json")
    assert done.returncode == 0, done.stderr
    assert seen["collections_before_command"] == 0  # the collector was off while the modules loaded
    assert seen["enabled"] is True and seen["frozen"] > 10_000  # on again for the command's own work
    assert seen["frozen_at_exit"] >= seen["frozen"]  # nothing of it walked at exit


def test_help_and_a_refused_command_line_end_with_start_up_frozen_too(tmp_path):
    done, seen = probe("--help")
    assert done.returncode == 0 and "Commands" in done.stdout
    done, seen = probe("run", "--no-such-option")
    assert done.returncode == 2 and "No such option" in done.stderr
    assert seen["frozen_at_exit"] > 0


def test_pydantic_plugins_are_not_looked_for_unless_the_environment_asks(tmp_path):
    """Dispatch uses no pydantic plugin: the entry-point scan of every installed
    distribution is skipped through pydantic's own switch, which the
    environment can still set (empty: plugins load)."""
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    args = ("--database-url", f"sqlite:///{tmp_path / 'd.db'}", "regions", "--json")
    done, seen = probe(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert seen["plugins_setting"] == "__all__" and seen["plugins_scanned"] is False
    done, seen = probe(*args, env={**env, "PYDANTIC_DISABLE_PLUGINS": ""})
    assert done.returncode == 0, done.stderr
    assert seen["plugins_setting"] == "" and seen["plugins_scanned"] is True


def test_a_run_closes_its_connections_before_the_process_exits(tmp_path):
    """Nothing is left to the interpreter's exit (where frozen objects are not
    finalised): SQLite's last connection closed checkpoints and removes the WAL."""
    path = tmp_path / "d.db"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DISPATCH_DATABASE_URL": f"sqlite:///{path}",
           "DISPATCH_SECRET_KEY": "k" * 32, "DISPATCH_SMTP_HOST": "127.0.0.1", "DISPATCH_SMTP_PORT": "9"}
    done = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--json"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcomes"] == {}
    assert path.exists() and not (tmp_path / "d.db-wal").exists()


def test_the_run_context_disposes_its_engines_when_the_command_ends(run, tmp_path, monkeypatch):
    disposed = []
    monkeypatch.setattr(sa.engine.Engine, "dispose", lambda self, close=True: disposed.append(self.url.database))
    url = f"sqlite:///{tmp_path / 'd.db'}"
    assert run("--database-url", url, "init").exit_code == 0
    assert run("--database-url", url, "regions").exit_code == 0
    assert disposed == [str(tmp_path / "d.db")] * 2  # init's own engine, then the read engine


def test_the_flash_index_is_partial_on_both_backends(database_url):
    """The model keeps the predicate in the index's info (no dialect option,
    see dispatch/models.py); the migration creates the index with it. Each
    backend rewrites a predicate its own way (PostgreSQL: LIKE as ~~, casts),
    so the migrated one is compared with the model's created beside it."""
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    model = next(i for i in Delivery.__table__.indexes if i.name == "ix_delivery_flash_due")
    columns = [c.name for c in model.columns]
    option = f"{engine.dialect.name}_where"
    beside = sa.Table("delivery", sa.MetaData(), *(sa.Column(name) for name in columns))  # not the model's table
    scratch = sa.Index("ix_scratch_flash_due", *(beside.c[name] for name in columns),
                       **{option: sa.text(model.info["where"])})
    with engine.begin() as connection:
        scratch.create(connection)
    found = {i["name"]: i for i in sa.inspect(engine).get_indexes("delivery")}
    engine.dispose()
    migrated, expected = found["ix_delivery_flash_due"], found["ix_scratch_flash_due"]
    assert migrated["column_names"] == columns == expected["column_names"]
    where = [str(getattr(x, "text", x)) for x in (migrated["dialect_options"][option],
                                                  expected["dialect_options"][option])]
    assert where[0] == where[1] and "flash:%" in where[0]


def test_a_forked_helper_sends_with_its_parents_renderers_and_its_own_channels(engine, database_url):
    """Its templates were compiled before the fork: a helper that built them
    again spent 0.18 × 10⁹ instructions on them before its first message."""
    from dispatch.config import Settings
    from dispatch.scheduler import Runner

    parent = Runner(Settings(database_url=database_url, secret_key="k" * 32), engine)
    helper = parent._helper()
    try:
        assert helper.role == "sender" and helper.composer is parent.composer
        assert helper.sender.composer is parent.composer
        assert helper.channels["email"] is not parent.channels["email"]  # connections are per process
    finally:
        helper.close()
        parent.close()
