"""Property tests (hypothesis) over everything that takes text from outside:
the SITREP parser and import, the CSV importer, the subscriber model (add
and edit through ``subscribers``) and the API's JSON bodies.

The property each time: the input is taken, or refused with a clear error
(an InputError naming the field, an HTTP 4xx) and every table is exactly as
it was. Never another exception, never a 500. On SQLite and PostgreSQL;
example counts stay modest so that the suite stays fast."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from dispatch import admins, csv_import, db, fields, sitrep_text, sitreps, subscribers
from dispatch.errors import DuplicateError, InputError, NotFoundError, SitrepFormatError
from dispatch.models import Subscriber, SubscriberKind, SubscriberStatus

from .tables import dump

# The same database serves every example of a test (the property holds
# whatever was stored before); no example database is written to the tree.
DB_SETTINGS = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 25)), deadline=None, database=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])

# Text as it comes from outside: any code point, lone surrogates included,
# with the troublesome ones (NUL, CR/LF, separators, bullets, quotes,
# non-ASCII digits) made likely, and lengths around the columns' limits.
NASTY = "\x00\x07\x1b\r\n\t\x85\u2028\u2029\ufeff•–—“”\"';:%_\\@²٣०"
any_char = st.one_of(st.characters(exclude_categories=()), st.sampled_from(NASTY))
nasty = st.one_of(
    st.text(any_char, max_size=30),
    st.text(st.sampled_from("ab .-@"), min_size=150, max_size=700),
    st.sampled_from(["", " ", "%", "_", "²", "٠٧:٣٠", "9" * 30]),
)
plain = st.text(st.sampled_from("abcdefgh XYZ.'-"), max_size=30)


def mostly(*good):
    """Plausible values five times in six, so that the taken paths are
    walked as well as the refusals."""
    plausible = st.one_of(*good)
    return st.integers(0, 5).flatmap(lambda n: nasty if n == 0 else plausible)


def email_addresses():
    local = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_%+-]{0,8}(\.[a-zA-Z0-9]{1,3})?", fullmatch=True)
    return mostly(st.builds("{}@example.org".format, local), st.sampled_from(
        ["reader@example.org", "READER@example.org", "Reader@Example.ORG", "j_smith@example.org"]))


names = mostly(plain)
region_lists = st.lists(mostly(st.sampled_from(["americas", "europe-eurasia", "Europe and Eurasia", "global"])), max_size=3)
analyst_lists = st.lists(mostly(st.sampled_from(["Dana Whitfield", "samir-haddad", "Colonel Dana Whitfield"])), max_size=2)
cadences = mostly(st.sampled_from(["immediate", "daily", "weekly", "Weekly"]))
times = mostly(st.sampled_from(["07:00", "7:05", "23:59", "00:00"]))
zones = mostly(st.sampled_from(["UTC", "Europe/London", "Asia/Tokyo"]))
weekdays = st.one_of(mostly(st.sampled_from(["mon", "friday", "3", 6])), st.integers(-10, 10**20))
formats = mostly(st.sampled_from(["html", "text"]))
hostile = nasty  # any field, any value


def _field_named(exc: InputError) -> bool:
    """A clear error: 'field: reason', or a SITREP error naming its source."""
    return isinstance(exc, SitrepFormatError) or re.match(r"^[\w -]+: \S", str(exc)) is not None


# --- the column rules themselves (no database) --------------------------------

@settings(max_examples=300, deadline=None, database=None)
@given(value=st.text(any_char, max_size=60), max_length=st.integers(0, 80), multiline=st.booleans())
def test_text_the_rules_accept_can_be_stored_and_is_what_it_claims(value, max_length, multiline):
    problem = fields.text_problem(value, max_length=max_length, multiline=multiline)
    if problem is None:
        assert len(value) <= max_length
        value.encode("utf-8")  # no lone surrogate
        allowed = "\t\r\n" if multiline else "\t"
        assert not any((ord(c) < 32 or 127 <= ord(c) < 160) and c not in allowed for c in value)
    else:
        assert problem and "\n" not in problem


# --- the SITREP parser and import ----------------------------------------------

def sitrep_texts():
    line = mostly(st.text(st.sampled_from("abcdefgh XYZ,.'"), min_size=1, max_size=40))
    title = st.one_of(line, st.text(st.sampled_from("Title "), min_size=480, max_size=620))
    analyst = st.one_of(st.sampled_from(["Dana Whitfield", "Colonel Dana Whitfield", "Dr. Samir Haddad"]),
                        line, st.text(st.sampled_from("Abcdefghij "), min_size=180, max_size=260))
    date = mostly(st.sampled_from(["March 3, 2025", "2026-11-18", "18 November 2026", "0001-01-01",
                                   "9999-12-31", "February 30, 2025"]))
    heading = mostly(st.sampled_from(["What has Happened:", "what has happened"]))
    bullets = st.lists(st.tuples(st.sampled_from(["• ", "* ", "- ", ""]), line), min_size=1, max_size=4)
    quotes = st.lists(st.tuples(line, analyst), max_size=3)

    @st.composite
    def build(draw):
        parts = [draw(st.sampled_from(["", "Field Notes Weekly\n"])),
                 f"Field SITREP – {draw(title)}\n", f"{draw(date)}\n", f"{draw(heading)}\n"]
        parts += [f"  {marker}{text}\n" for marker, text in draw(bullets)]
        commentary = draw(quotes)
        if commentary:
            parts.append("Why it Matters:\n")
            parts += [f"“{text}”\n- {who}\n" for text, who in commentary]
        return "".join(parts)
    return st.one_of(build(), build(), build(), st.text(any_char, max_size=200))


@DB_SETTINGS
@given(text=sitrep_texts(), approve=st.booleans())
def test_a_sitrep_is_imported_or_refused_naming_why_and_nothing_is_written(engine, text, approve):
    before = dump(engine)
    try:
        parsed = sitrep_text.parse(text, source="fuzz")
        with db.session_scope(engine) as session:
            sitreps.import_parsed(session, parsed, actor="fuzz", approve=approve)
    except InputError as exc:
        assert _field_named(exc), str(exc)
        assert dump(engine) == before
        event(f"refused: {str(exc).split(': ')[1 if isinstance(exc, SitrepFormatError) else 0][:30]}")
        return
    event("taken")
    with db.session_scope(engine) as session:  # what was taken reads back
        for sitrep in sitreps.list_sitreps(session):
            sitreps.as_dict(sitreps.get(session, sitrep.id), full=True)


# --- the CSV importer ------------------------------------------------------------

CSV_HEADER = ["email", "name", "regions", "analysts", "cadence", "at", "tz", "weekday", "format"]
def cell(values):
    """A CSV cell: often empty (the default), else a value."""
    return st.one_of(st.just(""), values.map(str))


csv_row = st.tuples(email_addresses(), cell(names), cell(region_lists.map(";".join)),
                    cell(analyst_lists.map(";".join)), cell(cadences), cell(times), cell(zones), cell(weekdays),
                    cell(formats))


@st.composite
def csv_files(draw):
    header = draw(st.one_of(st.just(CSV_HEADER), st.just(CSV_HEADER), st.lists(
        st.sampled_from(CSV_HEADER + ["notes", ""]), max_size=6)))
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(header)
    for row in draw(st.lists(csv_row, max_size=8)):
        writer.writerow(row[: len(header)] if header else row)
    data = out.getvalue().encode("utf-8", "surrogatepass")  # lone surrogates become bad UTF-8
    if draw(st.integers(0, 3)) == 0:  # bytes no writer makes: cut rows, stray quotes, bad UTF-8
        junk = draw(st.binary(max_size=40))
        at = draw(st.integers(0, len(data)))
        data = data[:at] + junk + data[at:]
    return data


@DB_SETTINGS
@given(data=csv_files(), as_text=st.booleans())
def test_a_csv_is_imported_row_by_row_or_refused_and_only_good_rows_are_written(engine, data, as_text):
    before = dump(engine)
    source = data.decode("utf-8", "replace") if as_text else io.BytesIO(data)
    try:
        report = csv_import.import_csv(engine, source, batch_rows=3)
    except InputError as exc:
        assert str(exc).startswith(("line ", "the CSV ")), str(exc)  # the whole file: where, or what
        assert dump(engine) == before
        event("file refused")
        return
    event(f"rows added: {bool(report.added)}, rows rejected: {bool(report.rejected)}")
    after = dump(engine)
    assert len(after["subscriber"]) == len(before["subscriber"]) + len(report.added)
    for _line, reason in report.rejected:
        assert re.match(r"^[\w -]+: ", reason), reason
    with db.session_scope(engine) as session:
        for _line, address in report.added:
            assert subscribers.get(session, address).status == SubscriberStatus.active


# --- the subscriber model -----------------------------------------------------------

preferences = st.builds(
    subscribers.Preferences,
    name=st.one_of(st.none(), names), regions=st.one_of(st.none(), region_lists),
    analysts=st.one_of(st.none(), analyst_lists), cadence=st.one_of(st.none(), cadences),
    send_at=st.one_of(st.none(), times), timezone=st.one_of(st.none(), zones),
    weekday=st.one_of(st.none(), weekdays), format=st.one_of(st.none(), formats))
slack_addresses = mostly(st.sampled_from(["C0123ABCD", "C0TEAM99", "https://hooks.example.org/services/T1/B2/x"]),
                         st.builds("https://hooks.example.org/{}".format, plain))
address = st.one_of(email_addresses(), slack_addresses)
kind_and_address = st.one_of(st.tuples(st.just(SubscriberKind.email), email_addresses()),
                             st.tuples(st.just(SubscriberKind.slack), slack_addresses),
                             st.tuples(st.sampled_from(SubscriberKind), address))


def with_analysts(engine) -> None:
    """Dana Whitfield and Samir Haddad, for the analyst preferences."""
    from .conftest import FIXTURES
    with db.session_scope(engine) as session:
        parsed = sitrep_text.parse((FIXTURES / "standard.txt").read_text("utf-8"))
        sitreps.import_parsed(session, parsed, actor="fuzz")


@DB_SETTINGS
@given(kind_address=kind_and_address, prefs=preferences,
       edit_by=st.one_of(st.none(), st.none(), address, st.integers(-5, 2**70).map(str)), edit=preferences)
def test_a_subscriber_is_added_and_edited_or_refused_and_nothing_is_written(engine, kind_address, prefs,
                                                                         edit_by, edit):
    with_analysts(engine)
    kind, address = kind_address
    edit_by = address if edit_by is None else edit_by  # mostly the one just added
    for attempt in ("add", "edit"):
        before = dump(engine)
        try:
            with db.session_scope(engine) as session:
                if attempt == "add":
                    subscribers.add_subscriber(session, address, kind=kind, prefs=prefs)
                else:
                    subscribers.edit_subscriber(session, edit_by, edit)
        except (InputError, DuplicateError, NotFoundError) as exc:
            assert not isinstance(exc, InputError) or _field_named(exc), str(exc)
            assert dump(engine) == before
            event(f"{attempt} refused: {type(exc).__name__} {getattr(exc, 'field', '')}")
        else:
            event(f"{attempt} taken")
    with db.session_scope(engine) as session:
        keys = [s.address_key for s in session.exec(select(Subscriber)).all()]
        assert all(fields.text_problem(k) is None for k in keys)


# --- the API's JSON bodies -------------------------------------------------------------

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), hostile),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(hostile, inner, max_size=3)),
    max_leaves=6)
patch_body = st.fixed_dictionaries({}, optional={
    "kind": mostly(st.sampled_from(["email", "slack"])), "address": address,
    "status": mostly(st.sampled_from(["active", "pending", "disabled", "bounced"])),
    "name": names, "regions": st.one_of(region_lists, region_lists, region_lists, json_value),
    "analysts": st.one_of(analyst_lists, analyst_lists, analyst_lists, json_value),
    "cadence": cadences, "send_at": times, "timezone": zones, "weekday": weekdays, "format": formats,
    "extra": json_value})
post_body = st.one_of(
    st.tuples(kind_and_address, mostly(st.sampled_from(["active", "pending"])), patch_body).map(
        lambda t: {**t[2], "kind": t[0][0].value, "address": t[0][1], "status": t[1]}),
    patch_body)
sitrep_body = st.fixed_dictionaries({"text": sitrep_texts()}, optional={
    "approve": st.one_of(st.booleans(), json_value), "regions": st.one_of(region_lists, json_value)})


@pytest.fixture
def api(web):
    with_analysts(web.engine)
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "fuzz")
        subscribers.add_subscriber(session, "reader@example.org")
    web.client.headers["Authorization"] = f"Bearer {token}"
    return web


@DB_SETTINGS
@given(method_path=st.sampled_from([("POST", "/api/subscribers"), ("PATCH", "/api/subscribers/1"),
                                    ("PATCH", "/api/subscribers/reader@example.org"),
                                    ("POST", "/api/sitreps")]),
       post=post_body, patch=patch_body, sitrep=sitrep_body)
def test_an_api_body_is_taken_or_gets_a_4xx_and_nothing_is_written(api, method_path, post, patch, sitrep):
    method, path = method_path
    body = sitrep if path == "/api/sitreps" else post if method == "POST" else patch
    before = dump(api.engine)
    # json.dumps escapes lone surrogates (\udcff), which the server reads back as text.
    response = api.client.request(method, path, content=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    event(f"{method} {path.split('/')[2]}: {response.status_code}")
    if response.status_code >= 400:
        assert response.json()["detail"], response.text
        assert dump(api.engine) == before
