"""`dispatch backup` / `dispatch restore`: a consistent copy of the SQLite
database even while `run` sends, restored only into an empty database, and
a restored database resumes without losing or repeating a delivery."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from pydantic import SecretStr

from dispatch import backup, bootstrap, db
from dispatch.config import Settings
from dispatch.scheduler import Runner
from dispatch.sink import SmtpSink

from .deliverytools import LATER, Clock, rows, seed
from .servers import ScriptedHandler

READERS = 30


class GatedHandler(ScriptedHandler):
    """Accepts ``gate_after`` messages, then holds the next one until told:
    ``opened`` accepts it and all later ones; ``refused`` answers 421 (the
    server going away, as when a host dies mid-send)."""

    def __init__(self, folder: Path, gate_after: int):
        super().__init__(folder)
        self.gate_after = gate_after
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.refused = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        if len(self.received) >= self.gate_after and not self.opened.is_set():
            self.reached.set()
            while not (self.opened.is_set() or self.refused.is_set()):
                await asyncio.sleep(0.02)
            if self.refused.is_set() and not self.opened.is_set():
                return "421 4.3.2 shutting down"
        return await super().handle_DATA(server, session, envelope)


def runner(url: str, engine, sink: SmtpSink, clock) -> Runner:
    settings = Settings(database_url=url, smtp_host=sink.host, smtp_port=sink.port, mail_from="news@example.org",
                        secret_key=SecretStr("k"), sender_threads=1, batch_size=5, smtp_pool_size=1)
    return Runner(settings, engine, clock=clock)


def statuses(path: Path) -> Counter:
    conn = sqlite3.connect(path)
    try:
        return Counter(dict(conn.execute("SELECT status, count(*) FROM delivery GROUP BY status").fetchall()))
    finally:
        conn.close()


def test_a_backup_taken_mid_send_restores_and_resumes_without_losing_or_repeating(tmp_path, run):
    live_url, restored_url = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'restored.db'}"
    handler = GatedHandler(tmp_path / "mail", gate_after=10)
    sink = SmtpSink(tmp_path / "mail", handler=handler).start()
    live = db.create_engine(live_url)
    bootstrap.init_database(live)
    seed(live, [f"reader{i}@example.org" for i in range(READERS)])
    try:
        first = runner(live_url, live, sink, Clock(LATER))
        sending = threading.Thread(target=first.run_once)
        sending.start()
        assert handler.reached.wait(30), "the run never got to the gate"

        made = run("--database-url", live_url, "backup", tmp_path / "mid-send.db")  # while `run` is mid-send
        assert made.exit_code == 0, made.output
        snapshot = statuses(tmp_path / "mid-send.db")
        assert snapshot["sent"] == 10 and snapshot["sending"] > 0 and snapshot["pending"] > 0, snapshot

        # The host dies: its relay connection goes, the live database is lost.
        handler.refused.set()
        first.stop.set()
        sending.join(30)
        first.close()
        live.dispose()
        (tmp_path / "live.db").rename(tmp_path / "lost.db")

        done = run("--database-url", restored_url, "restore", tmp_path / "mid-send.db")
        assert done.exit_code == 0, done.output
        handler.opened.set()
        restored = bootstrap.open_engine(Settings(database_url=restored_url))
        # Later than a lease: the rows claimed at backup time are reclaimed and sent.
        second = runner(restored_url, restored, sink, Clock(LATER + timedelta(minutes=30)))
        summary = second.run_once()
        second.close()
        assert summary.reclaimed == snapshot["sending"]
        final = rows(restored)
        restored.dispose()
    finally:
        sink.stop()
    assert [r.status.value for r in final] == ["sent"] * READERS
    by_message_id = Counter(message_id for _, message_id in handler.received)
    assert len(by_message_id) == READERS and set(by_message_id.values()) == {1}  # none lost, none twice
    assert {r.receipt for r in final} == set(by_message_id)


def test_backup_and_restore_refuse_what_they_must(tmp_path, run):
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    engine = db.create_engine(url)
    bootstrap.init_database(engine)
    seed(engine, ["ana@example.org"])
    engine.dispose()
    assert run("--database-url", url, "backup", tmp_path / "b.db").exit_code == 0
    assert (tmp_path / "b.db").stat().st_mode & 0o077 == 0  # readers' addresses: owner only

    again = run("--database-url", url, "backup", tmp_path / "b.db")
    assert again.exit_code == 2 and "exists already" in again.output

    into_live = run("--database-url", url, "restore", tmp_path / "b.db")
    assert into_live.exit_code == 2 and "is not empty" in into_live.output

    missing = run("--database-url", f"sqlite:///{tmp_path / 'nope.db'}", "backup", tmp_path / "c.db")
    assert missing.exit_code == 2 and "no database" in missing.output and not (tmp_path / "nope.db").exists()

    pg = "postgresql+psycopg://dispatch:hunter2-secret@db.internal/dispatch"
    refused = run("--database-url", pg, "backup", tmp_path / "pg.dump")
    assert refused.exit_code == 2 and "pg_dump --format=custom" in refused.output
    assert "hunter2-secret" not in refused.output and not (tmp_path / "pg.dump").exists()
    refused = run("--database-url", pg, "restore", tmp_path / "b.db")
    assert refused.exit_code == 2 and "pg_restore" in refused.output and "hunter2-secret" not in refused.output

    fresh = tmp_path / "fresh.db"
    restored = run("--database-url", f"sqlite:///{fresh}", "restore", tmp_path / "b.db")
    assert restored.exit_code == 0, restored.output
    check = sqlite3.connect(fresh)
    assert check.execute("SELECT address FROM subscriber").fetchall() == [("ana@example.org",)]
    check.close()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=3000), st.binary(max_size=3000).map(lambda b: backup.SQLITE_HEADER + b)))
def test_restore_of_any_file_is_a_restore_or_a_clear_error_and_nothing_written(tmp_path, data):
    source = tmp_path / "junk.bin"
    source.write_bytes(data)
    target = tmp_path / "target.db"
    target.unlink(missing_ok=True)
    try:
        backup.restore(source, f"sqlite:///{target}")
    except backup.InputError as exc:
        assert str(exc).startswith("FILE:")
        assert not target.exists()
    else:
        raise AssertionError("junk restored")
