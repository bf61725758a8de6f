"""A CSV import (Core inserts, which the ORM flush hooks never see) leaves
one audit entry (who, which file, the counts) and writes each new reader's
subscriber.created event when a webhook wants it, in batches."""

from __future__ import annotations

import time

from sqlalchemy import func, select as sa_select
from sqlmodel import col, select

from dispatch import csv_import, db, import_jobs
from dispatch.desk import audit
from dispatch.events import endpoints
from dispatch.models import AuditEntry, Delivery, Event

from .webtools import csrf_from


def _csv(rows: int, *, start: int = 0) -> str:
    lines = ["email,name"] + [f"reader{i}@example.org,Reader {i}" for i in range(start, start + rows)]
    return "\n".join(lines + ["not-an-address,Bad"]) + "\n"


def _entries(engine) -> list[AuditEntry]:
    """Every audit entry written after the database was set up (its regions are audited too)."""
    with db.read_scope(engine) as session:
        found = list(session.exec(select(AuditEntry).where(col(AuditEntry.actor_kind) != "system")
                                  .order_by(col(AuditEntry.id))).all())
        session.expunge_all()
        return found


def _count(engine, table, *where) -> int:
    with db.read_scope(engine) as session:
        return session.execute(sa_select(func.count()).select_from(table).where(*where)).scalar_one()


def test_one_audit_entry_per_import_with_actor_file_and_counts(engine):
    with audit.acting_as(audit.Actor("cli", "ed")):
        csv_import.import_csv(engine, _csv(1200), batch_rows=500, file_name="list.csv")
        csv_import.import_csv(engine, _csv(3, start=1198), file_name="again.csv")
    first, second = _entries(engine)
    assert (first.actor_kind, first.actor, first.action, first.target) == ("cli", "ed", "subscriber.imported",
                                                                          "csv:list.csv")
    assert first.changes == {"file": "list.csv", "added": 1200, "already_there": 0, "rejected": 1}
    assert second.changes == {"file": "again.csv", "added": 1, "already_there": 2, "rejected": 1}


def test_imported_readers_get_their_events_when_a_webhook_wants_them(engine):
    csv_import.import_csv(engine, _csv(10), file_name="none-wanted.csv")
    assert _count(engine, Event) == 0  # no webhook: nothing written
    with db.session_scope(engine) as session:
        hook = endpoints.add(session, "https://hooks.example.org/in", events=["subscriber.created"])
        endpoints.add(session, "https://hooks.example.org/other", events=["subscriber.bounced"])
        hook_id = hook.id
    csv_import.import_csv(engine, _csv(1200, start=10), batch_rows=500, file_name="list.csv")
    assert _count(engine, Event, Event.type == "subscriber.created") == 1200
    planned = _count(engine, Delivery, col(Delivery.webhook_id) == hook_id)
    assert planned == 1200 and _count(engine, Delivery, col(Delivery.webhook_id).is_not(None)) == 1200
    with db.read_scope(engine) as session:
        one = session.exec(select(Event).limit(1)).one()
        session.expunge(one)
    data = one.payload["data"]
    assert one.payload["type"] == "subscriber.created" and one.payload["id"] == one.id
    assert data["address"].startswith("reader") and data["kind"] == "email" and data["status"] == "active"
    assert isinstance(data["subscriber_id"], int)


def test_a_background_upload_is_audited_as_the_admin_who_started_it(web, monkeypatch):
    monkeypatch.setattr(import_jobs, "INLINE_MAX_BYTES", 1000)
    web.sign_in()
    csrf = csrf_from(web.client.get("/admin/subscribers/import").text)
    started = web.client.post("/admin/subscribers/import", data={"csrf_token": csrf},
                              files={"file": ("big list.csv", _csv(300).encode(), "text/csv")}, follow_redirects=False)
    assert started.status_code == 303
    deadline = time.monotonic() + 60
    while not [e for e in _entries(web.engine) if e.action == "subscriber.imported"]:
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.2)
    (entry,) = [e for e in _entries(web.engine) if e.action == "subscriber.imported"]
    assert (entry.actor_kind, entry.actor, entry.target) == ("user", "editor", "csv:big list.csv")
    assert entry.changes["added"] == 300


def test_the_cli_import_is_audited_under_its_actor(run, tmp_path):
    path = tmp_path / "readers.csv"
    path.write_text(_csv(5))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run("--database-url", url, "init").exit_code == 0
    assert run("--database-url", url, "--as", "ed", "subscriber", "import", str(path)).exit_code == 2  # one bad row
    engine = db.create_engine(url)
    try:
        (entry,) = [e for e in _entries(engine) if e.action == "subscriber.imported"]
    finally:
        engine.dispose()
    assert (entry.actor, entry.target, entry.changes["added"], entry.changes["rejected"]) == (
        "ed", "csv:readers.csv", 5, 1)


def test_a_hostile_file_name_is_stored_as_one_plain_line(engine):
    csv_import.import_csv(engine, _csv(1), file_name="evil\x1b[31m\nname\udcff.csv" + "x" * 500)
    with db.read_scope(engine) as session:
        (entry,) = session.exec(select(AuditEntry).where(AuditEntry.action == "subscriber.imported")).all()
        name = entry.changes["file"]
    assert name.startswith("evil [31m name .csv") and len(name) <= 200
    assert all(ch.isprintable() for ch in name)
