"""Subscriber search by address or name prefix (issue 14): name_key kept up
to date by every path that writes a name (the flush, the CSV import, the
migration for rows already there), read as an index range, wildcards as text —
on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import select

from dispatch import bootstrap, csv_import, db, subscribers
from dispatch.models import Subscriber, SubscriberChange, name_key, utcnow


def _add(engine, address: str, name: str = "") -> int:
    with db.session_scope(engine) as session:
        return subscribers.add_subscriber(session, address, prefs=subscribers.Preferences(name=name or None)).id


def _found(engine, text: str) -> list[str]:
    with db.read_scope(engine) as session:
        return [s.address for s in subscribers.subscriber_page(session, limit=50, search=text).items]


def test_search_matches_an_address_prefix_or_a_name_prefix_in_any_case(engine):
    _add(engine, "anna@example.org", "Zoë Brandt")
    _add(engine, "zed@example.org", "Anna  Lund")
    _add(engine, "carl@example.org", "Carl Straße")
    _add(engine, "dora@example.org")
    assert _found(engine, "ANNA") == ["anna@example.org", "zed@example.org"]  # address of one, name of the other
    assert _found(engine, "anna lund") == ["zed@example.org"]  # runs of white space are one space
    assert _found(engine, "zoË") == ["anna@example.org"]
    assert _found(engine, "carl strasse") == ["carl@example.org"]  # casefolded: ß is ss
    assert _found(engine, "lund") == []  # a prefix of the name, not any word of it
    assert _found(engine, "%") == [] and _found(engine, "_nna") == []  # wildcards are text


def test_a_renamed_reader_is_found_by_the_new_name_only(engine):
    reader = _add(engine, "r1@example.org", "Old Name")
    with db.session_scope(engine) as session:
        subscribers.edit_subscriber(session, reader, subscribers.Preferences(name="Brand New"))
    assert _found(engine, "old") == [] and _found(engine, "brand") == ["r1@example.org"]
    with db.read_scope(engine) as session:
        assert session.get(Subscriber, reader).name_key == "brand new"


def test_the_csv_import_sets_name_keys_and_writes_each_readers_history(engine):
    rows = "email,name,status\n" + "".join(
        f"imp{i}@example.org,Imported PERSON {i},{'unsubscribed' if i % 3 == 0 else 'active'}\n" for i in range(7))
    report = csv_import.import_csv(engine, rows, batch_rows=3)
    assert len(report.added) == 7
    assert _found(engine, "imported person 5") == ["imp5@example.org"]
    with db.read_scope(engine) as session:
        keys = session.exec(select(Subscriber.name_key).order_by(Subscriber.id)).all()
        assert keys == [f"imported person {i}" for i in range(7)]
        history = session.exec(select(Subscriber.address, SubscriberChange.from_status, SubscriberChange.to_status)
                               .join(SubscriberChange, SubscriberChange.subscriber_id == Subscriber.id)
                               .order_by(Subscriber.id)).all()
    assert history == [(f"imp{i}@example.org", None, "unsubscribed" if i % 3 == 0 else "active") for i in range(7)]


def test_a_core_insert_without_a_key_gets_one(engine):
    with engine.begin() as conn:
        conn.execute(sa.insert(Subscriber.__table__), [
            {"kind": "email", "address": "core@example.org", "address_key": "core@example.org",
             "name": "Core ROW", "created_at": utcnow(), "cadence": "daily", "format": "html", "status": "active"}])
    assert _found(engine, "core r") == ["core@example.org"]


def test_the_name_search_reads_the_name_key_index_on_sqlite(sqlite_url):
    engine = db.create_engine(sqlite_url)
    bootstrap.init_database(engine)
    _add(engine, "x@example.org", "Xavier")
    with db.read_scope(engine) as session:
        query = subscribers._listed(session, search="xav").order_by(Subscriber.id).limit(51)
        compiled = query.compile(dialect=engine.dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        plan = " ".join(str(r[-1]) for r in session.connection().exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled), params))
    engine.dispose()
    assert "ix_subscriber_name_key" in plan and "uq_subscriber_address_key_kind" in plan, plan


def test_name_key_is_what_the_migration_writes():
    from importlib import import_module
    migration = import_module("dispatch.migrations.versions.0012_name_search_delivery_sitrep")
    for name in ("", "Anna  Lund", " Straße ", "ÇA\tVA", None):
        assert migration.key_of(name) == name_key(name)
