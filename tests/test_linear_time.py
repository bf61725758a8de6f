"""No text from outside can make dispatch work super-linearly (see
dispatch/input_bounds.py): every parser and field check is fed pathological
input of one shape at size n and 8n, and the larger may take at most 20
times as long (linear is 8 times, quadratic 64). Plus the two cases that
froze the server, and a real server that keeps answering while a hostile
form is processed.

Timing tests are kept from flaking by an absolute floor far above what the
linear code takes (a quadratic case at these sizes takes whole seconds), the
best of three runs at size n, and a second try at 8n before failing.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlmodel import Session
from starlette.datastructures import FormData

from dispatch import (admins, bootstrap, catalogue, db, render, signup, sink, sitrep_text, sitreps, subscribers,
                      taxonomy)
from dispatch.errors import FieldError, InputError
from dispatch.models import SubscriberKind
from dispatch.sink import _free_port
from dispatch.subscribers import Preferences
from dispatch.web import forms
from tests.test_web_process import wait_for
from tests.webtools import csrf_from

RATIO = 20  # 8 times the input may take at most this many times as long


# --- the hostile text ----------------------------------------------------------

SPECIALS = "()[]{}<>.*+?|^$\\/:;,!#%&=_~`@"
QUOTES = "\"'“”„«»‘’"
BULLETS_AND_DASHES = "•*·▪●◦‣-–—"
SPACES = " \t\u00a0\u2003\u3000\x0b\x0c\x1c\x85\u2028"
WORDS = [
    "What has Happened", "what", "has", "happened", "Why it Matters", "why", "it", "matters", "SITREP",
    "sitrep", "General", "Gen.", "Dr.", "Sept", "September", "12th", "2023", "1", "a", "é", "e\u0301",
    "\u0301\u0316", "\u0f73", "U.S.", "South", "South Sudan", "Korea", "@@dispatch:", "xn--", "example.org",
    "C0123ABCD", "https://", "07:00", "²", "daily", "Europe/", "-- ", "- (",
]
CHARACTERS = SPECIALS + QUOTES + BULLETS_AND_DASHES + SPACES

unit = st.one_of(st.sampled_from(CHARACTERS), st.sampled_from(WORDS), st.text(min_size=1, max_size=2))
# A run is one short piece repeated; a hostile text is one or two runs between
# a start and an end that may give a pattern something to look for.
runs = st.lists(st.lists(unit, min_size=1, max_size=3).map("".join), min_size=1, max_size=2)
starts = st.sampled_from(["", "What has Happened", "Why it Matters", "- ", "-- ", "• ", "SITREP ", "(", "a@",
                          "General ", "September", "12", '"', "“"])
ends = st.sampled_from(["", "x", ":", ")", "!", "@x", "\n", " 2023"])


@dataclass(frozen=True)
class Shape:
    start: str
    runs: tuple[str, ...]
    end: str

    def of_size(self, n: int) -> str:
        share = n // len(self.runs)
        return self.start + "".join((run * (share // len(run) + 1))[:share] for run in self.runs) + self.end


shapes = st.builds(Shape, starts, runs.map(tuple), ends)
KNOWN = [  # the cases that were quadratic, and their relatives: always tried
    Shape("", ("(",), ""),
    Shape("What has Happened", (" ",), "x"),
    Shape("What has Happened:", ("\u00a0",), "-"),
    Shape("Why it Matters", ("\t",), "x"),
    Shape("- ", ("(",), ""),
    Shape("", ("\u0301\u0316",), ""),
    Shape("", ("1",), ""),
]


# --- measuring ---------------------------------------------------------------------

def _seconds(fn: Callable[[str], object], text: str) -> float:
    began = time.perf_counter()
    try:
        fn(text)
    except InputError:
        pass  # a clear refusal is an answer too
    return time.perf_counter() - began


def assert_linear(fn: Callable[[str], object], shape: Shape, *, n: int, floor: float) -> None:
    small = min(_seconds(fn, shape.of_size(n)) for _ in range(3))
    allowed = max(RATIO * small, floor)
    large = _seconds(fn, shape.of_size(8 * n))
    if large > allowed:  # a noisy neighbour? once more before calling it super-linear
        large = min(large, _seconds(fn, shape.of_size(8 * n)))
    assert large <= allowed, (
        f"{shape!r}: {8 * n:,} characters took {large:.3f} s, {n:,} took {small:.4f} s "
        f"(allowed {allowed:.3f} s): super-linear")


# --- what is measured ------------------------------------------------------------

HEAD = "Title\nSeptember 12, 2023\n"
BODY = "What has Happened:\n- x\n"


def _embedded(template: str) -> Callable[[str], object]:
    return lambda text: sitrep_text.parse(template.replace("@", text))


# A SITREP line is at most sitrep_text.MAX_LINE_CHARS (10,000) characters, so
# lines are measured below that, at 1,250 and 10,000.
LINE = 1_250
PARSER_TARGETS = {
    "publication or title line": _embedded("@\n" + HEAD + BODY),
    "SITREP prefix": _embedded("Academy SITREP @\nSeptember 12, 2023\n" + BODY),
    "date line": _embedded("Title\n@\n" + BODY),
    "what-has-happened heading": _embedded(HEAD + "@\n- x\n"),
    "bullet": _embedded(HEAD + "What has Happened:\n@\n- y\n"),
    "why-it-matters heading": _embedded(HEAD + BODY + "@\n“q”\n- Gen A B\n"),
    "quote": _embedded(HEAD + BODY + "Why it Matters:\n@\n- Gen A B\n"),
    "attribution": _embedded(HEAD + BODY + "Why it Matters:\n“q”\n@\n"),
    "whole text": sitrep_text.parse,
    "decoded upload": lambda text: sitrep_text.parse(sitrep_text.decode_source(text.encode("utf-8"))),
}

# Pure functions that take text of any length: measured on longer text.
PURE = 5_000
PURE_TARGETS = {
    "split_attribution": sitrep_text.split_attribution,
    "parse_date": sitrep_text.parse_date,
    "slugify": sitrep_text.slugify,
    "sitrep_fingerprint": lambda text: sitrep_text.sitrep_fingerprint(text, date(2023, 9, 12)),
    "catalogue.suggest_regions": catalogue.suggest_regions,
    "catalogue.likely_regions": catalogue.likely_regions,
    "render.wrap": render.wrap.__wrapped__,  # without its cache, which would time nothing
    "mail sink file name": lambda text: sink._unsafe.sub("_", text),
}

# Field checks: (field named in the error, check).
FIELD_TARGETS = {
    "check_email": ("email", subscribers.check_email),
    "check_slack_address": ("channel", subscribers.check_slack_address),
    "check_timezone": ("tz", subscribers.check_timezone),
    "check_send_at": ("at", subscribers.check_send_at),
    "check_weekday": ("weekday", subscribers.check_weekday),
    "check_name": ("name", subscribers.check_name),
    "check_username": ("username", admins.check_username),
    "check_password": ("password", admins.check_password),
    "quick_address_problem email": (None, lambda t: subscribers.quick_address_problem(SubscriberKind.email, t)),
    "quick_address_problem slack": (None, lambda t: subscribers.quick_address_problem(SubscriberKind.slack, t)),
    "form values shown again": (None, lambda t: forms.values_from(_form(t))),
    "form preferences": (None, lambda t: forms.preferences_from(_form(t))),
}


def _form(text: str) -> FormData:
    return FormData([(name, text) for name in ("name", "region", "analyst", "cadence", "send_at", "timezone",
                                                "weekday", "format", "email")])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite database with the regions and one analyst; every
    measured call is rolled back, so each one meets the same rows."""
    engine = db.create_engine(f"sqlite:///{tmp_path_factory.mktemp('linear') / 'subscribers.db'}")
    bootstrap.init_database(engine)
    with db.session_scope(engine) as session:
        taxonomy.get_or_create_analyst(session, name="Robert Walsh", title="General")
    with Session(engine) as session:
        yield session
    engine.dispose()


def _db_targets(session: Session) -> dict[str, tuple[str | None, Callable[[str], object]]]:
    def rolled_back(fn):
        def run(text):
            try:
                return fn(text)
            finally:
                session.rollback()
        return run

    def preference(field):
        return rolled_back(lambda t: subscribers.add_subscriber(
            session, "reader@example.org", prefs=Preferences(**{field: [t] if field in ("regions", "analysts") else t})))

    return {
        "taxonomy.resolve_regions": ("region", rolled_back(lambda t: taxonomy.resolve_regions(session, [t]))),
        "taxonomy.resolve_analysts": ("analyst", rolled_back(lambda t: taxonomy.resolve_analysts(session, [t]))),
        "taxonomy.find_analyst": (None, rolled_back(lambda t: taxonomy.find_analyst(session, t))),
        **{f"subscriber {field}": (error_field, preference(field)) for field, error_field in (
            ("name", "name"), ("regions", "region"), ("analysts", "analyst"), ("cadence", "cadence"),
            ("send_at", "at"), ("timezone", "tz"), ("weekday", "weekday"), ("format", "format"))},
        "signup.request_subscription": ("email", rolled_back(
            lambda t: signup.request_subscription(session, t, Preferences()))),
        "admins.create_token": ("name", rolled_back(lambda t: admins.create_token(session, t))),
        "SITREP import": (None, rolled_back(lambda t: sitreps.import_parsed(
            session, sitrep_text.parse(HEAD + BODY + f"Why it Matters:\n“{t}”\n- {t}\n"), actor="test"))),
    }


# --- the properties -------------------------------------------------------------

linear_settings = settings(
    max_examples=15, deadline=None, phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _with_known_shapes(test):
    for shape in KNOWN:
        test = example(shape=shape)(test)
    return test


@pytest.mark.parametrize("target", PARSER_TARGETS)
@linear_settings
@_with_known_shapes
@given(shape=shapes)
def test_the_sitrep_parser_is_linear_on_any_line(target, shape):
    assert_linear(PARSER_TARGETS[target], shape, n=LINE, floor=0.05)


@pytest.mark.parametrize("target", PURE_TARGETS)
@linear_settings
@_with_known_shapes
@given(shape=shapes)
def test_text_functions_are_linear_on_any_text(target, shape):
    assert_linear(PURE_TARGETS[target], shape, n=PURE, floor=0.05)


def _refusal_names(field: str | None, fn: Callable[[str], object]) -> Callable[[str], object]:
    """Valid, or a FieldError naming the field: nothing else escapes."""
    def checked(text):
        try:
            return fn(text)
        except FieldError as exc:
            assert field is None or exc.field == field, exc
            raise
    return checked


@pytest.mark.parametrize("target", FIELD_TARGETS)
@linear_settings
@_with_known_shapes
@given(shape=shapes)
def test_field_checks_are_linear_and_name_the_field(target, shape):
    field, check = FIELD_TARGETS[target]
    assert_linear(_refusal_names(field, check), shape, n=PURE, floor=0.05)


DB_TARGET_NAMES = list(_db_targets(None))  # type: ignore[arg-type]  (names only)


@pytest.mark.parametrize("target", DB_TARGET_NAMES)
@linear_settings
@_with_known_shapes
@given(shape=shapes)
def test_lookups_through_the_database_are_linear(store, target, shape):
    field, fn = _db_targets(store)[target]
    assert_linear(_refusal_names(field, fn), shape, n=LINE, floor=0.25)


# --- the two cases that froze the server ---------------------------------------

def _child(conn, fn, args):
    began = time.perf_counter()
    try:
        outcome = repr(fn(*args))
    except Exception as exc:  # noqa: BLE001  (reported to the parent as is)
        outcome = f"{type(exc).__name__}: {exc}"
    conn.send((time.perf_counter() - began, outcome))


def run_bounded(fn, *args, budget: float = 5.0) -> tuple[float, str]:
    """fn(*args) in a forked child: (seconds, outcome). A quadratic regular
    expression cannot be interrupted, so on the old code the child is killed
    after ``budget`` seconds rather than kept running for minutes."""
    parent, child_end = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_child, args=(child_end, fn, args))
    process.start()
    try:
        if not parent.poll(budget):
            pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {budget} s")
        return parent.recv()
    finally:
        process.kill()
        process.join()


def _analyst_through_sqlite(path: str, value: str) -> list:
    engine = db.create_engine(f"sqlite:///{path}")
    bootstrap.init_database(engine)
    with db.session_scope(engine) as session:
        return taxonomy.resolve_analysts(session, [value])


def test_forty_thousand_open_parentheses_as_an_analyst(tmp_path):
    seconds, outcome = run_bounded(_analyst_through_sqlite, str(tmp_path / "subscribers.db"), "(" * 40_000)
    assert seconds < 1.0
    assert outcome.startswith("FieldError: analyst: at most 200 characters"), outcome
    # The parser's own helper takes any length, in one pass.
    seconds, outcome = run_bounded(sitrep_text.split_attribution, "General Ann Lee " + "(" * 40_000)
    assert seconds < 1.0 and outcome == repr(("Ann Lee " + "(" * 40_000, "General"))


def test_a_heading_followed_by_a_hundred_thousand_spaces():
    text = "Title\nSeptember 12, 2023\nWhat has Happened" + " " * 100_000 + "x\n- a\n"
    seconds, outcome = run_bounded(sitrep_text.parse, text)
    assert seconds < 1.0
    assert outcome.startswith("SitrepFormatError: <text>:3: the line is 100,018 characters long"), outcome
    # Below the line limit the spaces are only trailing space, as before.
    text = "Title\nSeptember 12, 2023\nWhat has Happened:" + " " * 9_000 + "\n- a\n"
    seconds, outcome = run_bounded(lambda t: sitrep_text.parse(t).summary, text)
    assert seconds < 1.0 and outcome == repr(["a"])


def test_what_the_rewritten_patterns_still_read():
    """The linear forms read what the backtracking ones did."""
    assert sitrep_text.split_attribution("Gen. A (x) B (y") == ("A  B (y", "Gen.")
    assert sitrep_text.split_attribution("A (x\ny) B (z)") == ("A (x\ny) B", None)
    assert sitrep_text.slugify("Émile Ñuñez-O’Brien") == "emile-nunez-obrien"
    parsed = sitrep_text.parse("Weekly sitrep sitrep: Title\n2023-09-12\n  what  HAS happened :  \n"
                               "\u00a0•\u00a0first\n  continued\n-\u2003second\nWhy it matters:\n"
                               "“Quote.”\n  --  Dr. Ann Lee (Ret.), Oxford  \n")
    assert parsed.publication is None and parsed.title == "Title"
    assert parsed.summary == ["first continued", "second"]
    assert [(q.analyst_title, q.analyst_name, q.text) for q in parsed.commentary] == [("Dr.", "Ann Lee", "Quote.")]
    assert subscribers.check_send_at(" ٠٧:٣٠ ") == "07:30"
    with pytest.raises(FieldError, match="weekday"):
        subscribers.check_weekday("²")
    assert forms.values_from(FormData([("weekday", "²")]))["weekday"] == 0


# The backtracking patterns as they were, to show on short lines that the
# linear forms read the same.
OLD_HAPPENED = re.compile(r"^\s*what\s+has\s+happened\s*:?\s*$", re.IGNORECASE)
OLD_MATTERS = re.compile(r"^\s*why\s+it\s+matters\s*:?\s*$", re.IGNORECASE)
OLD_PREFIX = re.compile(r"^.*?\bSITREP\b\s*[–—:\-]\s*(?P<title>.+)$", re.IGNORECASE)
OLD_BULLET = re.compile(r"^\s*[•*\-–—·▪●◦‣]\s+(?P<text>.*)$")
OLD_ATTRIBUTION = re.compile(r"^\s*[-–—]{1,2}\s*(?P<who>\S.*)$")
PIECES = ["what", "WHAT", "has", "happened", "why", "it", "Matters", "SITREP", "sitrep", "xsitrep", "x", "Gen.",
          " ", "  ", "\t", "\u00a0", "\u2003", ":", "::", "-", "--", "–", "—", "•", "*", "·", "(", ")", ",", "\n"]
lines = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)


@settings(max_examples=500, deadline=None)
@given(line=lines)
def test_the_linear_patterns_read_what_the_backtracking_ones_did(line):
    single = line.replace("\n", " ")  # the parser matches one line at a time
    assert bool(sitrep_text.HAPPENED_HEADING.fullmatch(single.strip())) == bool(OLD_HAPPENED.match(single))
    assert bool(sitrep_text.MATTERS_HEADING.fullmatch(single.strip())) == bool(OLD_MATTERS.match(single))
    old, new = OLD_PREFIX.match(single.strip()), sitrep_text.SITREP_PREFIX.search(single.strip())
    assert (old and old.group("title")) == (new and new.group("title"))
    old, new = OLD_BULLET.match(single), sitrep_text.BULLET.match(single.lstrip())
    assert (old and old.group("text").strip()) == (new and new.group("text").strip())
    old, new = OLD_ATTRIBUTION.match(single), sitrep_text.ATTRIBUTION.match(single.strip())
    assert (old and old.group("who").strip()) == (new and new.group("who").strip())
    assert sitrep_text._without_parentheses(line) == re.sub(r"\(.*?\)", "", line)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_slugs_are_what_they_were_when_the_whole_text_was_decomposed_at_once(text):
    whole = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", whole.lower()).strip("-")
    if slug:  # (an empty one becomes a hash of the text)
        assert sitrep_text.slugify(text) == slug


# --- a real server ---------------------------------------------------------------------

def test_other_requests_are_answered_while_a_hostile_form_is_processed(tmp_path, mail_sink):
    """`dispatch web` as a process; one client posts a subscribe form meant
    to freeze it (as large as a form may be: 60,000 "(", where 40,000 took
    12 s before), another keeps asking for a page meanwhile."""
    from dispatch.web.app import DEFAULT_BODY_BYTES

    port = _free_port("127.0.0.1")
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}",
           "DISPATCH_SMTP_HOST": mail_sink.host, "DISPATCH_SMTP_PORT": str(mail_sink.port)}
    server = subprocess.Popen([sys.executable, "-m", "dispatch", "web", "--port", str(port)], env=env,
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/subscribe", server)
        hostile = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        hostile.request("GET", "/subscribe")
        page = hostile.getresponse()
        cookie = page.getheader("set-cookie").split(";", 1)[0]
        token = csrf_from(page.read().decode())
        head = f"csrf_token={token}&email=reader%40example.org&analyst=".encode()
        body = head + b"(" * (DEFAULT_BODY_BYTES - len(head) - 1024)
        hostile.request("POST", "/subscribe", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})

        slowest = 0.0
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            began = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login", timeout=5) as answer:
                    assert answer.status == 200
            except (TimeoutError, urllib.error.URLError):
                slowest = float("inf")
                break
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(0.05)
        assert slowest < 1.0, "another client waited while the hostile form was processed"
        refused = hostile.getresponse()
        assert refused.status in (400, 413)  # refused, whether by the field check or a body limit
        refused.read()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # stuck inside a regular expression: no signal handler runs
            server.kill()
            server.wait()
