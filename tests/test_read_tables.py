"""The quick read path of `dispatch sitrep list`, `regions` and `analysts`
(issue 14): Core selects on dispatch.read_tables give what the models give —
the same columns, the same SITREPs in the same order with the same JSON, the
same refusals — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.types import TypeDecorator

from dispatch import db, read_tables, sitrep_rows, sitreps
from dispatch.models import SQLModel, SitrepStatus
from dispatch.sitrep_text import parse

from .conftest import FIXTURES


@pytest.mark.parametrize("light", [read_tables.sitrep, read_tables.sitrep_region, read_tables.region,
                                   read_tables.analyst], ids=lambda t: t.name)
def test_each_light_column_is_a_column_of_the_models(light):
    table = SQLModel.metadata.tables[light.name]
    for column in light.columns:
        assert column.name in table.c, column.name
        model_type = table.c[column.name].type
        if isinstance(column.type, TypeDecorator):  # a conversion of ours: the very same
            assert type(model_type) is type(column.type), column.name
        else:  # the same kind of value (the models' status is an Enum: a String)
            assert model_type._type_affinity is column.type._type_affinity, column.name


def _seed(session) -> None:
    text = (FIXTURES / "standard.txt").read_text("utf-8")
    for n in range(7):
        parsed = parse(text.replace("from Odesa", f"from Odesa {n}", 1))  # a title of its own: another SITREP
        made = sitreps.import_parsed(session, parsed, actor="ed").sitrep
        made.priority = n % 3
        if n % 3 == 1 and n != 4:
            sitreps.approve_sitrep(session, made.id, by="al")
        if n == 4:  # approved, under embargo
            sitreps.approve_sitrep(session, made.id, by="al",
                                   release_at=datetime.now(timezone.utc) + timedelta(days=2))
        if n == 2:
            sitreps.tag_sitrep(session, made.id, ["global", "americas", "europe-eurasia"], by="ed")
    session.flush()


CASES = [dict(limit=100), dict(limit=3), dict(limit=3, after=5), dict(limit=2, before=3),
         dict(limit=100, status=SitrepStatus.approved), dict(limit=100, status=SitrepStatus.draft),
         dict(limit=100, search="odesa 3"), dict(limit=100, search=" 3"), dict(limit=100, search="%"),
         dict(limit=2, status=SitrepStatus.approved, after=9)]


def test_the_core_list_is_the_models_list(engine):
    with db.session_scope(engine) as session:
        _seed(session)
    for case in CASES:
        with db.read_scope(engine) as session:
            stored = sitreps.sitrep_page(session, **case)
            wanted = ([sitreps.as_dict(s) for s in stored.items], stored.next, stored.previous)
        with db.read_connection(engine) as connection:
            listed = sitrep_rows.page(connection, **case)
        assert ([sitrep_rows.as_dict(s, s.regions) for s in listed.items], listed.next, listed.previous) == wanted, case


def test_sitrep_list_prints_what_the_models_hold(run, database_url, engine):
    with db.session_scope(engine) as session:
        _seed(session)
    with db.read_scope(engine) as session:  # as stored, not as this session last set them
        wanted = [sitreps.as_dict(s) for s in sitreps.list_sitreps(session)]
    assert any(len(row["regions"]) == 3 for row in wanted) and any(row["scheduled_for"] for row in wanted)
    shown = run("--database-url", database_url, "sitrep", "list", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == json.loads(json.dumps(wanted, default=str))
    table = run("--database-url", database_url, "sitrep", "list", "--status", "approved")
    assert table.exit_code == 0 and "scheduled for" in table.output and "al" in table.output
    empty = run("--database-url", database_url, "sitrep", "list", "--status", "withdrawn")
    assert empty.output.strip() == "no SITREPs with status withdrawn"


def test_regions_and_analysts_print_what_the_models_hold(run, database_url, engine):
    from dispatch import taxonomy

    with db.session_scope(engine) as session:
        _seed(session)
        regions = [{"slug": r.slug, "name": r.name} for r in taxonomy.all_regions(session)]
    shown = run("--database-url", database_url, "regions", "--json")
    assert json.loads(shown.stdout) == regions
    analysts = json.loads(run("--database-url", database_url, "analysts", "--json").stdout)
    assert analysts and analysts == sorted(analysts, key=lambda a: a["name"])
    assert set(analysts[0]) == {"id", "name", "title", "slug"}


def test_a_bad_cursor_and_a_server_database_behind_the_schema_are_refused_as_before(run, postgres_url):
    bad = run("--database-url", postgres_url, "sitrep", "list", "--after", "x")
    assert bad.exit_code == 2 and "--after" in bad.output
    db.upgrade(db.create_engine(postgres_url), "0016")  # behind this release's head
    behind = run("--database-url", postgres_url, "sitrep", "list")
    assert behind.exit_code == 1 and "run `dispatch init` to create or upgrade it" in behind.output, behind.output
