"""Hostile values through every face, on SQLite and PostgreSQL: each gets a
clear 4xx (or exit 2) naming the field, never a 500 or a traceback, and the
database is left exactly as it was.

The values: NUL and other control characters, undecodable bytes (lone
surrogates), 10,000 characters, ids past what an id column holds, the
extreme ends of the calendar, and digits that are not ASCII ('²' is a digit
to str.isdigit, '٣' to a regex \\d)."""

from __future__ import annotations

import itertools
import json

import pytest
from sqlmodel import select

from dispatch import admins, db, sitrep_text, sitreps, subscribers
from dispatch.web.security import Throttle
from dispatch.models import Subscriber

from .conftest import FIXTURES
from .tables import dump
from .webtools import make_web

STANDARD = (FIXTURES / "standard.txt").read_text("utf-8")
HUGE_ID = str(2**63)  # past int64: SQLite cannot bind it
BIG_ID = str(2**31)  # past INTEGER: PostgreSQL refuses it
LONG = "x" * 10_000
SURROGATE = "\udcff"  # what a non-UTF-8 byte in an argument or a file name becomes


def sitrep_text_with(*, title="Port Strike Halts Grain Shipments", bullet="Dock workers walked out.",
                     analyst="Dana Whitfield", quote="A long stoppage would hurt.") -> str:
    return (f"Field SITREP – {title}\nMarch 3, 2025\nWhat has Happened:\n• {bullet}\n"
            f"Why it Matters:\n“{quote}”\n- {analyst}\n")


@pytest.fixture
def hostile_web(database_url, engine, mail_sink, tmp_path):
    many = Throttle(limit=10_000, window=60)
    harness = make_web(database_url, engine, mail_sink, tmp_path / "mail")
    harness.client.app.state.signup_throttle = many
    with harness.client:
        harness.sign_in()
        with db.session_scope(engine) as session:
            _, token = admins.create_token(session, "cms")
            sitreps.import_parsed(session, sitrep_text.parse(STANDARD), actor="ed", approve=True)
            subscribers.add_subscriber(session, "reader@example.org")
            subscribers.add_subscriber(session, "jxsmith@example.org", prefs=subscribers.Preferences(name="JX"))
            subscribers.add_subscriber(session, "C0123ABCD", kind=subscribers.SubscriberKind.slack)
        harness.token = token
        yield harness


def _api(web):
    return {"Authorization": f"Bearer {web.token}"}


def _form(web, path, data, page=None):
    return web.form(path, data, page=page)


_fresh = itertools.count(1)


def _subscribe(web, **changes):
    """The public form for an address not seen before (an existing one's
    preferences are never changed from this form, whatever it sends)."""
    return web.form("/subscribe", {**SUBSCRIBE, "email": f"new{next(_fresh)}@example.org", **changes})


SUBSCRIBE = {"email": "new@example.org", "name": "New", "cadence": "weekly", "send_at": "07:00",
             "timezone": "UTC", "weekday": "0", "format": "html"}


# (what, request, field the answer must name); each answer must be a 4xx.
WEB_CASES = [
    # public sign-up form
    ("NUL in a sign-up name", lambda w: _subscribe(w, name="Ana\x00"), "name"),
    ("escape character in a name", lambda w: _subscribe(w, name="Ana\x1b[2J"), "name"),
    ("10k-character name", lambda w: _subscribe(w, name=LONG), "name"),
    ("weekday=²", lambda w: _subscribe(w, weekday="²"), "weekday"),
    ("a 5,000-digit weekday", lambda w: _subscribe(w, weekday="9" * 5000), "weekday"),
    ("NUL in a time zone", lambda w: _subscribe(w, timezone="UTC\x00"), "tz"),
    ("NUL in an address", lambda w: _subscribe(w, email="a\x00@example.org"), "email"),
    ("NUL in a region", lambda w: _subscribe(w, region="americas\x00"), "region"),
    # admin pages: ids, filters, forms
    ("a SITREP id past int64", lambda w: w.client.get(f"/admin/sitreps/{HUGE_ID}"), "sitrep_id"),
    ("a SITREP id past INTEGER", lambda w: w.client.get(f"/admin/sitreps/{BIG_ID}/preview"), "sitrep_id"),
    ("a subscriber id past int64", lambda w: w.client.get(f"/admin/subscribers/{HUGE_ID}"), "subscriber_id"),
    ("a delivery id past int64", lambda w: w.client.get(f"/admin/deliveries/{HUGE_ID}"), "delivery_id"),
    ("sitrep=² in the log", lambda w: w.client.get("/admin/deliveries?sitrep=²"), "sitrep"),
    ("a huge sitrep in the log", lambda w: w.client.get(f"/admin/deliveries?sitrep={HUGE_ID}"), "sitrep"),
    ("a day that is no day", lambda w: w.client.get("/admin/deliveries?day=2026-02-30"), "day"),
    ("a huge subscriber in the log", lambda w: w.client.get(f"/admin/deliveries?subscriber={HUGE_ID}"), "subscriber"),
    ("NUL as the subscriber in the log", lambda w: w.client.get("/admin/deliveries?subscriber=%00"), "subscriber"),
    ("NUL in a SITREP search", lambda w: w.client.get("/admin/sitreps?q=%00"), "search"),
    ("NUL in a subscriber search", lambda w: w.client.get("/admin/subscribers?q=a%00"), "search"),
    ("a 10k search", lambda w: w.client.get(f"/admin/subscribers?q={LONG}"), "search"),
    ("a 600-character title", lambda w: _form(w, "/admin/sitreps/new",
                                              {"text": sitrep_text_with(title="T" * 600)}), "title"),
    ("a 201-character analyst", lambda w: _form(w, "/admin/sitreps/new", {"text": sitrep_text_with(
        analyst=" ".join(["Abcdefghijklmnopqrst"] * 10))}), "analyst"),
    ("a NUL in a pasted bullet", lambda w: _form(w, "/admin/sitreps/new",
                                                 {"text": sitrep_text_with(bullet="Dock\x00 workers")}), "bullet"),
    ("a 501-character webhook URL", lambda w: _form(w, "/admin/subscribers/new", {
        "kind": "slack", "address": "https://hooks.example.org/" + "a" * 480, "cadence": "daily",
        "send_at": "08:00", "timezone": "UTC", "weekday": "0", "format": "html"},
        page="/admin/subscribers/new?kind=slack"), "at most 500 characters"),
    ("a NUL in a withdrawal reason", lambda w: _form(w, "/admin/sitreps/1/withdraw", {"reason": "x\x00"},
                                                     page="/admin/sitreps/1"), "reason"),
    ("weekday=² in an admin edit", lambda w: _form(w, "/admin/subscribers/1", {
        **SUBSCRIBE, "weekday": "²", "status": "active"}, page="/admin/subscribers/1"), "weekday"),
    # JSON API
    ("an API SITREP id past int64", lambda w: w.client.get(f"/api/sitreps/{HUGE_ID}", headers=_api(w)), "sitrep_id"),
    ("approving an id past INTEGER", lambda w: w.client.post(f"/api/sitreps/{BIG_ID}/approve", headers=_api(w)),
     "sitrep_id"),
    ("an API delivery id past int64", lambda w: w.client.get(f"/api/deliveries/{HUGE_ID}", headers=_api(w)),
     "delivery_id"),
    ("sitrep= past int64 in the API log", lambda w: w.client.get(f"/api/deliveries?sitrep={HUGE_ID}",
                                                                headers=_api(w)), "sitrep"),
    ("since=0001-01-01T00:00+14:00", lambda w: w.client.get("/api/deliveries", params={
        "since": "0001-01-01T00:00+14:00"}, headers=_api(w)), "since"),
    ("until=9999-12-31T23:59-14:00", lambda w: w.client.get("/api/deliveries", params={
        "until": "9999-12-31T23:59-14:00"}, headers=_api(w)), "until"),
    ("a huge subscriber in the API log", lambda w: w.client.get(f"/api/deliveries?subscriber={HUGE_ID}",
                                                               headers=_api(w)), "subscriber"),
    ("NUL as an API subscriber", lambda w: w.client.get("/api/subscribers/a%00b", headers=_api(w)), "subscriber"),
    ("NUL in an API search", lambda w: w.client.get("/api/subscribers?q=%00", headers=_api(w)), "search"),
    ("NUL in an API SITREP search", lambda w: w.client.get("/api/sitreps?q=%00", headers=_api(w)), "search"),
    ("a 600-character title by API", lambda w: w.client.post("/api/sitreps", headers=_api(w), json={
        "text": sitrep_text_with(title="T" * 600)}), "title"),
    ("a 201-character analyst by API", lambda w: w.client.post("/api/sitreps", headers=_api(w), json={
        "text": sitrep_text_with(analyst="A" * 201)}), "analyst"),
    ("a surrogate in a quote by API", lambda w: w.client.post(
        "/api/sitreps", headers={**_api(w), "Content-Type": "application/json"},
        content=json.dumps({"text": sitrep_text_with(quote="bad \udcff byte")}).encode()), "text"),
    ("a NUL in a withdrawal reason by API", lambda w: w.client.post(
        "/api/sitreps/1/withdraw", params={"reason": "x\x00"}, headers=_api(w)), "reason"),
    ("a 501-character webhook by API", lambda w: w.client.post("/api/subscribers", headers=_api(w), json={
        "kind": "slack", "address": "https://hooks.example.org/" + "a" * 480}), "at most 500 characters"),
    ("a NUL in a name by API", lambda w: w.client.post("/api/subscribers", headers=_api(w), json={
        "address": "n@example.org", "name": "N\x00"}), "name"),
    ("weekday ² by API", lambda w: w.client.post("/api/subscribers", headers=_api(w), json={
        "address": "n@example.org", "weekday": "²"}), "weekday"),
    ("weekday 10^30 by API", lambda w: w.client.post("/api/subscribers", headers=_api(w), json={
        "address": "n@example.org", "weekday": 10**30}), "weekday"),
    ("PATCH with wildcards for an address", lambda w: w.client.patch(
        "/api/subscribers/%25smith%25@%25", headers=_api(w), json={"name": "Changed"}), "subscriber"),
    ("DELETE with a wildcard for an address", lambda w: w.client.delete("/api/subscribers/%25",
                                                                        headers=_api(w)), "subscriber"),
    ("PATCH a name of 10k characters", lambda w: w.client.patch(
        "/api/subscribers/reader@example.org", headers=_api(w), json={"name": LONG}), "name"),
]


def test_every_web_and_api_entry_refuses_hostile_values_clearly(hostile_web):
    web = hostile_web
    before = dump(web.engine)
    problems = []
    for what, request, field in WEB_CASES:
        response = request(web)
        if not 400 <= response.status_code < 500:
            problems.append(f"{what}: HTTP {response.status_code}")
        elif field not in response.text:
            problems.append(f"{what}: HTTP {response.status_code} does not name {field!r}: {response.text[:300]}")
        after = dump(web.engine)
        if after != before:
            changed = [t for t in before if before[t] != after[t]]
            problems.append(f"{what}: changed {changed}")
            before = after
    assert problems == [], "\n".join(problems)


def test_digits_of_other_scripts_are_read_as_the_numbers_they_are_and_stored_in_ascii(hostile_web):
    """'٠٧:٣٠' is 07:30 in Arabic-Indic digits: taken, and what is stored is ASCII."""
    web = hostile_web
    assert _subscribe(web, email="arabic@example.org", send_at="٠٧:٣٠", weekday="٣").status_code == 200
    response = web.client.post("/api/subscribers", headers=_api(web), json={
        "address": "devanagari@example.org", "send_at": "०७:००", "cadence": "weekly", "weekday": "५"})
    assert response.status_code == 201 and (response.json()["at"], response.json()["weekday"]) == ("07:00", "saturday")
    with db.session_scope(web.engine) as session:
        arabic = subscribers.get(session, "arabic@example.org")
        assert (arabic.send_at, arabic.weekday) == ("07:30", 3)
        assert all(s.send_at.isascii() for s in session.exec(select(Subscriber)).all())


def test_extreme_but_real_days_and_instants_are_answered_not_refused(hostile_web):
    web = hostile_web
    for day in ("9999-12-31", "0001-01-01"):
        response = web.client.get(f"/admin/deliveries?day={day}")
        assert response.status_code == 200, (day, response.text[:300])
    for since in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00"):
        response = web.client.get("/api/deliveries", params={"since": since}, headers=_api(web))
        assert response.status_code == 200 and response.json() == {"items": [], "next": None}


# --- the CLI -------------------------------------------------------------------

@pytest.fixture
def cli(run, database_url, tmp_path):
    """The CLI on a database holding one SITREP (id 1) and one reader."""
    def invoke(*args, input=None):
        return run("--database-url", database_url, *args, input=input)
    assert invoke("init").exit_code == 0
    (tmp_path / "standard.txt").write_text(STANDARD, "utf-8")
    assert invoke("sitrep", "import", tmp_path / "standard.txt").exit_code == 0
    assert invoke("subscriber", "add", "reader@example.org").exit_code == 0
    invoke.engine = db.create_engine(database_url)
    yield invoke
    invoke.engine.dispose()


def _csv_with_long_name(tmp_path):
    path = tmp_path / "long-field.csv"
    path.write_text("email,name\nlong@example.org," + "n" * 200_000 + "\nok@example.org,Fine\n", "utf-8")
    return path


# (what, arguments, exit code, text the one error line must hold)
CLI_CASES = [
    ("a SITREP id past int64", ["sitrep", "show", HUGE_ID], 2, "ID"),
    ("approving an id past INTEGER", ["sitrep", "approve", BIG_ID], 2, "ID"),
    ("a priority past INTEGER", ["sitrep", "edit", "1", "--priority", str(2**40)], 2, "priority"),
    ("a 600-character title", ["sitrep", "edit", "1", "--title", "T" * 600], 2, "title"),
    ("a control character in a title", ["sitrep", "edit", "1", "--title", "Ti\x07tle"], 2, "title"),
    ("a 201-character --by", ["sitrep", "approve", "1", "--by", "b" * 201], 2, "by"),
    ("undecodable bytes in a reason", ["sitrep", "withdraw", "1", "--reason", "x" + SURROGATE], 2, "reason"),
    ("undecodable bytes in a search", ["sitrep", "list", "--search", SURROGATE], 2, "search"),
    ("weekday ²", ["subscriber", "add", "w@example.org", "--weekday", "²"], 2, "weekday"),
    ("a 201-character name", ["subscriber", "add", "w@example.org", "--name", "n" * 201], 2, "name"),
    ("undecodable bytes in a name", ["subscriber", "edit", "1", "--name", SURROGATE], 2, "name"),
    ("a 501-character webhook URL", ["slack", "add", "https://hooks.example.org/" + "a" * 480], 2,
     "at most 500 characters"),
    ("a subscriber id past int64", ["subscriber", "show", HUGE_ID], 1, "no subscriber"),
    ("undecodable bytes as a subscriber", ["subscriber", "remove", SURROGATE, "--yes"], 1, "no subscriber"),
    ("a subscriber search with a surrogate", ["subscriber", "list", "--search", SURROGATE], 2, "search"),
    ("/dev/zero as a CSV", ["subscriber", "import", "/dev/zero"], 2, "larger than"),
    ("a preview at 0001-01-01T00:00+14:00", ["preview", "1", "--at", "0001-01-01T00:00+14:00"], 2, "--at"),
    ("a preview at the end of time", ["preview", "1", "--at", "9999-12-31T23:00"], 2, "--at"),
    ("a run at the end of time", ["run", "--once", "--now", "9999-12-31T23:59Z"], 2, "--now"),
    ("a log since 0001-01-01T00:00+14:00", ["log", "--since", "0001-01-01T00:00+14:00"], 2, "--since"),
    ("a delivery id past int64", ["log", "--delivery", HUGE_ID], 2, "--delivery"),
    ("a negative log limit", ["log", "--limit", "-1"], 2, "--limit"),
    ("retrying an id past int64", ["retry", HUGE_ID], 2, "DELIVERY_ID"),
    ("undecodable bytes as an admin", ["admin", "remove", SURROGATE], 2, "username"),
    ("undecodable bytes as a token name", ["admin", "token", SURROGATE, "--revoke"], 2, "name"),
]


def test_every_cli_option_refuses_hostile_values_in_one_line(cli, tmp_path):
    before = dump(cli.engine)
    problems = []
    cases = CLI_CASES + [("a CSV field of 200,000 characters", ["subscriber", "import", _csv_with_long_name(tmp_path)],
                          2, "line 2: name: at most 200 characters")]
    for what, args, code, text in cases:
        result = cli(*args)
        output = result.stdout + result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"{what}: {type(result.exception).__name__}: {result.exception}")
        elif result.exit_code != code or text not in output or "Traceback" in output:
            problems.append(f"{what}: exit {result.exit_code}: {output[:300]!r}")
        after = dump(cli.engine)
        if after != before and "CSV field" not in what:
            problems.append(f"{what}: changed {[t for t in before if before[t] != after[t]]}")
        before = after
    assert problems == [], "\n".join(problems)
