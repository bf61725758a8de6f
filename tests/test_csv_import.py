"""The CSV importer: every row checked before anything is written, then
short batches (so that SQLite's write lock is free between them), a file
streamed with a size limit, and the rejected rows reported by line."""

from __future__ import annotations

import io
import sqlite3
import threading
import time

import pytest
from sqlmodel import select

from dispatch import csv_import, db, subscribers
from dispatch.errors import InputError
from dispatch.models import Subscriber, SubscriberKind

from .tables import dump


def rows(n: int, *, start: int = 0) -> str:
    return "email,name,regions,cadence,at,tz\n" + "".join(
        f"reader{i}@example.org,Reader {i},europe-eurasia;americas,daily,07:30,Europe/Berlin\n"
        for i in range(start, start + n))


def stored(engine) -> list[str]:
    with db.session_scope(engine) as session:
        return list(session.exec(select(Subscriber.address).order_by(Subscriber.id)).all())


def test_a_concurrent_write_succeeds_during_a_large_import(sqlite_url, tmp_path):
    """Another connection that waits at most one second for the write lock
    gets it while thousands of rows go in: the import takes the lock one
    short batch at a time, not for the whole file."""
    engine = db.create_engine(sqlite_url)
    db.upgrade(engine)
    from dispatch import taxonomy
    with db.session_scope(engine) as session:
        taxonomy.seed_regions(session)
    done = threading.Event()
    report = {}

    def importer():
        try:
            report["result"] = csv_import.import_csv(engine, rows(4000), batch_rows=100)
        finally:
            done.set()
    thread = threading.Thread(target=importer)
    writes_during, failures = 0, []
    other = sqlite3.connect(tmp_path / "subscribers.db", timeout=1.0, isolation_level=None)
    thread.start()
    try:
        n = 0
        while not done.is_set():
            n += 1
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("INSERT INTO stored_setting (key, value) VALUES (?, 'x')", (f"probe-{n}",))
                other.execute("COMMIT")
                writes_during += not done.is_set()
            except sqlite3.OperationalError as exc:
                failures.append(str(exc))
                other.execute("ROLLBACK") if other.in_transaction else None
            time.sleep(0.01)
    finally:
        thread.join()
        other.close()
    assert failures == []
    assert writes_during >= 3
    assert len(report["result"].added) == 4000 and len(stored(engine)) == 4000
    engine.dispose()


def test_rows_go_in_in_batches_and_the_report_keeps_line_order(engine):
    with db.session_scope(engine) as session:
        subscribers.add_subscriber(session, "READER7@example.org")
    batches = []
    text = rows(1200) + "reader3@EXAMPLE.org,Again,,,,\nbad-address,,,,,\n"
    report = csv_import.import_csv(engine, text, batch_rows=500, on_batch=lambda done, total: batches.append(
        (done, total)))
    assert batches == [(500, 1199), (1000, 1199), (1199, 1199)]
    assert [line for line, _ in report.added][:3] == [2, 3, 4]
    assert report.already_there == [(9, "reader7@example.org"), (1202, "reader3@EXAMPLE.org")]
    assert report.rejected == [(1203, "email: 'bad-address' is not a valid address: "
                                      "An email address must have an @-sign.")]
    assert len(stored(engine)) == 1200


def test_line_numbers_count_physical_lines_as_before(engine):
    """The same report, line for line, as the row-at-a-time importer gave."""
    text = ('email,name,tz\n'
            '\n'
            'a@example.org,"Two\nlines",UTC\n'  # a quoted line break: the row ends on line 4
            'b@example.org,B,Nowhere/Town\n'
            '\n'
            ',,\n'
            'c@example.org,C,UTC\n'
            'd@example.org,D,UTC,extra,cells\n'
            'e@example.org\n'
            'C@example.org,again\n')
    report = csv_import.import_csv(engine, text)
    assert report.rejected == [(4, "name: must not contain line breaks"),
                               (5, "tz: unknown time zone 'Nowhere/Town' (an IANA name such as Europe/London)"),
                               (7, "email: '' is not a valid address: An email address must have an @-sign.")]
    assert report.added == [(8, "c@example.org"), (9, "d@example.org"), (10, "e@example.org")]
    assert report.already_there == [(11, "C@example.org")]


def test_a_field_longer_than_the_csv_modules_limit_is_a_rejected_row(engine):
    text = "email,name\nlong@example.org," + "n" * 200_000 + "\nok@example.org,Fine\n"
    report = csv_import.import_csv(engine, text)
    assert report.rejected == [(2, "name: at most 200 characters (this one has 200,000)")]
    assert report.added == [(3, "ok@example.org")]


def test_values_the_columns_cannot_hold_are_rejected_rows(engine):
    text = ("email,name,regions,analysts\n"
            "a@example.org,Bell\x07,,\n"
            "b@example.org,,americas\x00,\n"
            "c@example.org,,,\udcff\n"
            "d@example.org,Fine,,\n")
    report = csv_import.import_csv(engine, text)
    assert [(line, reason.split(":")[0]) for line, reason in report.rejected] == [
        (2, "name"), (3, "region"), (4, "analyst")]
    assert stored(engine) == ["d@example.org"]


def test_dev_zero_is_refused_by_its_size_without_reading_it_whole(engine):
    before = dump(engine)
    with open("/dev/zero", "rb") as endless, pytest.raises(InputError, match="larger than 1 MB"):
        csv_import.import_csv(engine, endless, limit=1024 * 1024)
    assert dump(engine) == before


def test_a_file_that_goes_bad_late_writes_nothing(engine):
    """Bytes that are not UTF-8 at the end: refused before the first batch."""
    before = dump(engine)
    data = rows(1500).encode() + b"late@example.org,Caf\xe9\n"
    with pytest.raises(InputError, match="not UTF-8"):
        csv_import.import_csv(engine, io.BytesIO(data), batch_rows=100)
    assert dump(engine) == before
    with pytest.raises(InputError, match="larger than"):
        csv_import.import_csv(engine, io.BytesIO(rows(1500).encode()), limit=10_000)
    assert dump(engine) == before


def test_a_stream_and_its_text_import_alike(engine):
    text = "\ufeffemail,Name\nx@example.org,X\n"
    report = csv_import.import_csv(engine, io.BytesIO(text.encode("utf-8")))
    assert report.added == [(2, "x@example.org")]
    with db.session_scope(engine) as session:
        subscribers.remove_subscriber(session, "x@example.org")
    assert csv_import.import_csv(engine, text).added == [(2, "x@example.org")]
    with db.session_scope(engine) as session:
        assert subscribers.get(session, "x@example.org").kind == SubscriberKind.email


def test_the_admin_page_streams_an_upload_and_refuses_what_it_cannot_read(web):
    from tests.webtools import csrf_from
    web.sign_in()

    def upload(data: bytes):
        csrf = csrf_from(web.client.get("/admin/subscribers/import").text)
        return web.client.post("/admin/subscribers/import", data={"csrf_token": csrf},
                               files={"file": ("list.csv", data, "text/csv")})
    page = upload(rows(1200).encode())
    assert page.status_code == 200 and "1200 added" in page.text
    before = dump(web.engine)
    bad = upload(rows(10, start=5000).encode() + b"x@example.org,\xff\n")
    assert bad.status_code == 400 and "not UTF-8" in bad.text
    assert dump(web.engine) == before
