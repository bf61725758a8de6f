"""The delivery log filtered by a SITREP (issue 14): ``delivery_sitrep``
holds each planned delivery's SITREPs, written by the ledger as it plans
and filled by migration 0012 for the deliveries already there; the log
pages through it with every other filter — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import count

import sqlalchemy as sa
from sqlmodel import select

from dispatch import db, ledger, sitreps, subscribers
from dispatch.digest import Window
from dispatch.models import Delivery, DeliverySitrep, DeliveryStatus
from dispatch.sitrep_text import parse

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
_numbers = count(1)


def _sitrep(session, n: int) -> int:
    text = f"Dispatch SITREP – Test {n}\nNovember {n}, 2026\nWhat has Happened:\n• Thing {n} happened.\n"
    return sitreps.import_parsed(session, parse(text), actor="test", approve=True).sitrep.id


def _plan(engine, reader: int, carried: list[tuple[int, ...]]) -> None:
    with db.session_scope(engine) as session:
        ledger.plan(session, reader, [Window(f"daily:{next(_numbers)}", NOW, NOW, ids) for ids in carried], now=NOW)


def test_planning_writes_each_deliverys_sitreps_once(engine):
    with db.session_scope(engine) as session:
        a, b = _sitrep(session, 1), _sitrep(session, 2)
        reader = subscribers.add_subscriber(session, "r@example.org").id
    windows = [Window("daily:x", NOW, NOW, (a, b)), Window("daily:y", NOW, NOW, (b,))]
    with db.session_scope(engine) as session:
        assert ledger.plan(session, reader, windows, now=NOW) == 2
    with db.session_scope(engine) as session:
        assert ledger.plan(session, reader, windows, now=NOW) == 0  # planned twice: nothing new, no link twice
        ids = {d.window_key: d.id for d in session.exec(select(Delivery)).all()}
        links = set(session.execute(sa.select(DeliverySitrep.__table__)).all())
    assert links == {(a, ids["daily:x"]), (b, ids["daily:x"]), (b, ids["daily:y"])}


def test_the_log_of_one_sitrep_pages_newest_first_with_the_other_filters(engine):
    with db.session_scope(engine) as session:
        old, new = _sitrep(session, 1), _sitrep(session, 2)
        one = subscribers.add_subscriber(session, "one@example.org").id
        two = subscribers.add_subscriber(session, "two@example.org").id
    _plan(engine, one, [(old,)] * 4 + [(new,)] * 3 + [(old, new)] * 2)
    _plan(engine, two, [(old,)] * 3)
    with db.session_scope(engine) as session:
        carrying_old = [e.delivery.id for e in ledger.log(session, sitrep_id=old)]
        assert len(carrying_old) == 9 and carrying_old == sorted(carrying_old, reverse=True)
        for i in carrying_old[::3]:
            session.get(Delivery, i).status = DeliveryStatus.failed
    walked, cursor = [], None
    with db.read_scope(engine) as session:
        while True:
            page = ledger.log_page(session, limit=4, sitrep_id=old, after=cursor)
            walked += [e.delivery.id for e in page.items]
            if page.next is None:
                break
            cursor = page.next
        assert walked == carrying_old
        back = ledger.log_page(session, limit=4, sitrep_id=old, before=walked[4])
        assert [e.delivery.id for e in back.items] == walked[:4] and back.previous is None
        failed = ledger.log_page(session, limit=10, sitrep_id=old, status=DeliveryStatus.failed)
        assert [e.delivery.id for e in failed.items] == carrying_old[::3]
        mine = ledger.log_page(session, limit=10, sitrep_id=old, subscriber_id=two)
        assert len(mine.items) == 3 and {e.address for e in mine.items} == {"two@example.org"}
        day = ledger.log_page(session, limit=10, sitrep_id=new, since=NOW - timedelta(hours=1),
                              until=NOW + timedelta(hours=1))
        assert len(day.items) == 5
        assert ledger.log_page(session, limit=10, sitrep_id=new, since=NOW + timedelta(hours=1)).items == []


def test_removing_a_reader_removes_their_links(engine):
    with db.session_scope(engine) as session:
        a = _sitrep(session, 1)
        reader = subscribers.add_subscriber(session, "gone@example.org").id
    _plan(engine, reader, [(a,)] * 2)
    with db.session_scope(engine) as session:
        subscribers.remove_subscriber(session, reader)
    with db.read_scope(engine) as session:
        assert session.execute(sa.select(sa.func.count()).select_from(DeliverySitrep.__table__)).scalar() == 0


def test_migration_0012_fills_links_and_name_keys_for_rows_already_there(database_url):
    engine = db.create_engine(database_url)
    db.upgrade(engine, "0011")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO sitrep (id, title, event_date, status, priority, summary, source_text, fingerprint, "
            "created_at, updated_at) VALUES (1, 'a', '2026-11-01', 'approved', 0, '[]', 'x', 'f1', :t, :t), "
            "(2, 'b', '2026-11-02', 'approved', 0, '[]', 'x', 'f2', :t, :t)"), {"t": NOW.replace(tzinfo=None)})
        conn.execute(sa.text(
            "INSERT INTO subscriber (id, kind, address, address_key, name, timezone, send_at, cadence, weekday, "
            "format, status, bounce_count, created_at) VALUES (1, 'email', 'a@example.org', 'a@example.org', "
            "'Anna  LUND', 'UTC', '07:00', 'daily', 0, 'html', 'active', 0, :t)"), {"t": NOW.replace(tzinfo=None)})
        conn.execute(sa.text(
            "INSERT INTO delivery (id, subscriber_id, window_key, sitrep_ids, status, attempts, created_at) VALUES "
            "(1, 1, 'w1', '[1, 2]', 'sent', 1, :t), (2, 1, 'w2', '[2]', 'sent', 1, :t), "
            "(3, 1, 'w3', '[]', 'sent', 1, :t), (4, 1, 'w4', '[2, 99]', 'sent', 1, :t)"),
            {"t": NOW.replace(tzinfo=None)})
    db.upgrade(engine)
    with engine.connect() as conn:
        links = set(conn.execute(sa.text("SELECT sitrep_id, delivery_id FROM delivery_sitrep")).all())
        key = conn.execute(sa.text("SELECT name_key FROM subscriber")).scalar()
    assert links == {(1, 1), (2, 1), (2, 2), (2, 4), (99, 4)}  # as the JSON says, as the ledger writes it
    assert key == "anna lund"
    db.downgrade(engine, "0011")
    db.upgrade(engine)
    engine.dispose()
