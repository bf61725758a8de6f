"""Subscriber search by address or name prefix, or a prefix of a later word
of the name (issue 14): name_key and subscriber_name_word kept up to date by
every path that writes a name (the flush, the CSV import, the migrations for
rows already there), each read as an index range, wildcards as text — on
SQLite and PostgreSQL."""

from __future__ import annotations

import re

import sqlalchemy as sa
from hypothesis import given, strategies as st
from sqlmodel import select

from dispatch import csv_import, db, subscribers
from dispatch.models import Subscriber, SubscriberChange, SubscriberNameWord, name_key, name_word_keys, utcnow


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
    assert _found(engine, "und") == []  # the start of a word, not any part of it
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


def _plan(engine, search: str) -> str:
    """The search's plan as the database gives it; on PostgreSQL with
    sequential scans ruled out, so that a tiny table shows whether its
    indexes can serve the query at all (at scale: bench/admin.py)."""
    with db.read_scope(engine) as session:
        query = subscribers._listed(session, search=search).order_by(Subscriber.id).limit(51)
        compiled = query.compile(dialect=engine.dialect)
        connection = session.connection()
        if engine.dialect.name == "sqlite":
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
            return " ".join(str(r[-1]) for r in rows)
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return " ".join(r[0] for r in connection.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params))


def test_the_search_reads_an_index_range_for_each_way_of_matching(engine):
    _add(engine, "x@example.org", "Xavier Lund")
    plan = _plan(engine, "lu")
    for index in ("uq_subscriber_address_key_kind", "ix_subscriber_name_key", "ix_subscriber_name_word_word_key"):
        assert index in plan, plan
    assert not re.search(r"\bSCAN subscriber\b|Seq Scan", plan), plan  # no row is read to be filtered


def test_name_key_is_what_the_migration_writes():
    from importlib import import_module
    migration = import_module("dispatch.migrations.versions.0012_name_search_delivery_sitrep")
    for name in ("", "Anna  Lund", " Straße ", "ÇA\tVA", None):
        assert migration.key_of(name) == name_key(name)


# --- a later word of the name (subscriber_name_word) ---------------------------------

def _words(engine) -> set[tuple[int, str]]:
    with db.read_scope(engine) as session:
        table = SubscriberNameWord.__table__.c
        return set(session.execute(sa.select(table.subscriber_id, table.word_key)).all())


def test_a_later_word_or_its_start_finds_the_reader(engine):
    anna = _add(engine, "a@example.org", "Anna Maria  LUND")
    _add(engine, "b@example.org", "Lundqvist")  # the first word: name_key's own range
    _add(engine, "c@example.org", "Ola Blund")
    assert _found(engine, "Lund") == ["a@example.org", "b@example.org"]
    assert _found(engine, "lu") == ["a@example.org", "b@example.org"]
    assert _found(engine, "MARIA lu") == ["a@example.org"]  # a later word and the words after it
    assert _found(engine, "maria  lund") == ["a@example.org"]
    assert _found(engine, "lund maria") == [] and _found(engine, "und") == []
    assert _found(engine, "blu") == ["c@example.org"] and _found(engine, "ola") == ["c@example.org"]
    assert {(i, w) for i, w in _words(engine) if i == anna} == {(anna, "maria lund"), (anna, "lund")}


def test_a_reader_found_twice_is_listed_once_and_pages_hold(engine):
    ids = [_add(engine, f"lund{i}@example.org", f"Lund Lund {i}") for i in range(5)]
    with db.read_scope(engine) as session:
        first = subscribers.subscriber_page(session, limit=3, search="lund")
        second = subscribers.subscriber_page(session, limit=3, search="lund", after=first.next)
        assert [s.id for s in first.items] + [s.id for s in second.items] == ids


def test_renaming_or_removing_a_reader_rewrites_their_words(engine):
    reader = _add(engine, "r@example.org", "Old Surname")
    other = _add(engine, "o@example.org", "Keep Me")
    with db.session_scope(engine) as session:
        subscribers.edit_subscriber(session, reader, subscribers.Preferences(name="Brand New Name"))
    assert _found(engine, "surname") == [] and _found(engine, "name") == ["r@example.org"]
    assert _words(engine) == {(reader, "new name"), (reader, "name"), (other, "me")}
    with db.session_scope(engine) as session:
        subscribers.edit_subscriber(session, reader, subscribers.Preferences(cadence="weekly"))  # name kept
    assert _found(engine, "new") == ["r@example.org"]
    with db.session_scope(engine) as session:
        subscribers.remove_subscriber(session, reader)
    assert _words(engine) == {(other, "me")}


def test_the_csv_import_writes_the_words(engine):
    report = csv_import.import_csv(engine, "email,name\nk1@example.org,Karin  Berg\nk2@example.org,\n"
                                           "k3@example.org,Solo\n", batch_rows=2)
    assert len(report.added) == 3
    assert _found(engine, "berg") == ["k1@example.org"]
    assert {w for _, w in _words(engine)} == {"berg"}


def test_migration_0021_fills_the_words_of_readers_already_there(database_url):
    engine = db.create_engine(database_url)
    db.upgrade(engine, "0016")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO subscriber (id, kind, address, address_key, name, name_key, timezone, send_at, cadence, "
            "weekday, format, status, bounce_count, created_at) VALUES "
            "(1, 'email', 'a@example.org', 'a@example.org', 'Anna  Maria LUND', 'anna maria lund', 'UTC', '07:00', "
            "'daily', 0, 'html', 'active', 0, :t), "
            "(2, 'email', 'b@example.org', 'b@example.org', '', '', 'UTC', '07:00', 'daily', 0, 'html', 'active', 0, :t)"),
            {"t": utcnow().replace(tzinfo=None)})
    db.upgrade(engine)
    assert _words(engine) == {(1, "maria lund"), (1, "lund")}
    assert _found(engine, "lu") == ["a@example.org"]
    db.downgrade(engine, "0016")
    db.upgrade(engine)
    engine.dispose()


NAMES = st.text(st.sampled_from("aAbß Ç\t\u00a0\u2003"), max_size=12)


@given(NAMES)
def test_the_words_are_the_name_key_from_each_later_word_on(name):
    key = name_key(name)
    starts = [i for i in range(1, len(key)) if key[i - 1] == " "]
    assert name_word_keys(name) == [key[i:] for i in starts]
    assert all(w and not w.startswith(" ") and name_key(w) == w for w in name_word_keys(name))
    from importlib import import_module
    migration = import_module("dispatch.migrations.versions.0021_subscriber_name_word")
    assert migration.word_keys(key) == name_word_keys(name)


def test_the_search_finds_exactly_the_names_with_a_word_that_starts_with_it(engine):
    """Every start of every word (and a few texts that start none), against
    the plain rule: some word of the name, and those after it, start with the text."""
    names = ["Anna Lund", "Lu Xun", "Ólafur Arnalds", "Mary Ann Lu", "Straße Süd", "X", "lund lund"]
    for i, name in enumerate(names):
        _add(engine, f"p{i}@example.org", name)
    searches = {key[:n] for name in names for key in [name_key(name)] + name_word_keys(name)
                for n in range(1, len(key) + 1)} | {"nd", "ann lu", "q"}
    for search in sorted(searches):
        text = name_key(search)  # as the search takes it: "ann " is "ann"
        wanted = [f"p{i}@example.org" for i, name in enumerate(names)
                  if any(" ".join(name_key(name).split(" ")[w:]).startswith(text)
                         for w in range(len(name_key(name).split(" "))))]
        assert _found(engine, search) == wanted, search
