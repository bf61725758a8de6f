"""The CSV export is lossless: export → import into a fresh database →
export gives the same file, statuses, Slack channels and all (issue 14)."""

from __future__ import annotations

import csv
import io

from dispatch import bootstrap, csv_export, csv_import, db, sitreps, subscribers
from dispatch.models import Subscriber, SubscriberKind, SubscriberStatus, utcnow
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences
from sqlmodel import select

from .conftest import FIXTURES

WEBHOOK = "https://hooks.slack.com/services/T000/B000/XXXXsecret"


def _seed(session) -> None:
    sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
    add = subscribers.add_subscriber
    add(session, "active@example.org", prefs=Preferences(name='=HYPERLINK("x"), "quoted"', regions=["americas"],
                                                           analysts=["Dana Whitfield"], cadence="weekly",
                                                           weekday="fri", send_at="06:15", timezone="Asia/Tokyo"))
    add(session, "Pending@Example.org", prefs=Preferences(name="+plus -minus @at"), status=SubscriberStatus.pending)
    for address, status in [("gone@example.org", SubscriberStatus.unsubscribed),
                            ("bounced@example.org", SubscriberStatus.bounced),
                            ("off@example.org", SubscriberStatus.disabled)]:
        reader = add(session, address, prefs=Preferences(name="'quote first", format="text",
                                                         regions=["europe-eurasia", "americas"]))
        reader.status = status
        if status == SubscriberStatus.unsubscribed:
            reader.opted_out_at = utcnow()
    add(session, "C0123ABCD", kind=SubscriberKind.slack, prefs=Preferences(name="#desk", cadence="immediate"))
    add(session, WEBHOOK, kind=SubscriberKind.slack, prefs=Preferences(name="hook", regions=["global"]),
        status=SubscriberStatus.disabled)
    session.commit()


def _export(engine) -> str:
    return "".join(csv_export.text_chunks(csv_export.rows(engine, chunk_rows=2), chunk_rows=3))


def test_export_import_export_is_identical(session, engine, tmp_path):
    _seed(session)
    first = _export(engine)
    rows = list(csv.DictReader(io.StringIO(first)))
    assert {r["status"] for r in rows} == {"active", "pending", "unsubscribed", "bounced", "disabled"}
    assert [r["email"] for r in rows if r["kind"] == "slack"] == ["C0123ABCD", WEBHOOK]
    assert first == subscribers.export_csv(subscribers.list_subscribers(session))  # one format, both ways

    fresh = db.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    bootstrap.init_database(fresh)
    with db.session_scope(fresh) as other:  # the same analysts, from the same SITREP
        sitreps.import_parsed(other, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
    report = csv_import.import_csv(fresh, first)
    assert report.rejected == [] and len(report.added) == len(rows)
    assert _export(fresh) == first

    with db.session_scope(fresh) as other:
        by_address = {s.address.casefold(): s for s in other.exec(select(Subscriber))}
        assert by_address["gone@example.org"].opted_out_at is not None  # the opt-out holds
        assert by_address["pending@example.org"].confirmed_at is None
        assert by_address["active@example.org"].confirmed_at is not None
        assert by_address[WEBHOOK.casefold()].kind == SubscriberKind.slack
    # Imported again: every row, Slack channels too, is already there.
    again = csv_import.import_csv(fresh, first)
    assert again.added == [] and len(again.already_there) == len(rows)


def test_an_old_csv_without_status_or_kind_still_imports(engine):
    report = csv_import.import_csv(engine, "email,name\nold@example.org,Old\n")
    assert report.rejected == [] and len(report.added) == 1
    rows = list(csv.DictReader(io.StringIO(_export(engine))))
    assert [(r["email"], r["status"], r["kind"]) for r in rows] == [("old@example.org", "active", "email")]


def test_bad_status_or_kind_is_a_rejected_row_naming_the_field(engine):
    report = csv_import.import_csv(engine, "email,status,kind\n"
                                           "a@example.org,gone,email\n"
                                           "b@example.org,active,fax\n"
                                           "#general,active,slack\n")
    assert report.added == []
    assert [(line, reason.split(":")[0]) for line, reason in report.rejected] == [
        (2, "status"), (3, "kind"), (4, "channel")]


def test_the_export_streams_in_chunks(session, engine):
    for n in range(7):
        subscribers.add_subscriber(session, f"r{n}@example.org")
    session.commit()
    chunks = list(csv_export.text_chunks(csv_export.rows(engine, chunk_rows=2), chunk_rows=3))
    assert len(chunks) == 3 and chunks[0].startswith("email,name,")
    assert "".join(chunks).count("\n") == 8


def test_the_cli_and_admin_exports_carry_status_and_slack(run, web, tmp_path):
    assert run("subscriber", "add", "x@example.org").exit_code == 0
    assert run("slack", "add", "C0999ZZZZ").exit_code == 0
    assert run("subscriber", "edit", "x@example.org", "--status", "disabled").exit_code == 0
    out = tmp_path / "out.csv"
    assert run("subscriber", "export", out).exit_code == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["email"], r["status"], r["kind"]) for r in rows] == [
        ("x@example.org", "disabled", "email"), ("C0999ZZZZ", "active", "slack")]

    with db.session_scope(web.engine) as session:
        subscribers.add_subscriber(session, "C0888YYYY", kind=SubscriberKind.slack,
                                   status=SubscriberStatus.pending)
    web.sign_in()
    exported = web.client.get("/admin/subscribers/export.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "C0888YYYY,,,,daily,08:00,UTC,mon,html,pending,slack" in exported.text
