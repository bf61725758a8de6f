"""No log line carries a signed link, a webhook secret, an API or Slack token
or a password in a URL: checked on the redactor, through configured
handlers, and on the real `dispatch web` and `dispatch run` processes."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from dispatch import links, logsafe
from dispatch.logsafe import ELLIPSIS, Redactor
from dispatch.sink import SlackSink, _free_port

from .conftest import FIXTURES

SECRET = "log-test-secret"
WEBHOOK_SECRET = "Zq8wX2vB7nM4kL1pR6tY9uI3"
SLACK_WEBHOOK = f"https://hooks.slack.com/services/T0123ABCD/B0456EFGH/{WEBHOOK_SECRET}"
API_TOKEN = "dsp_" + "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0Kk1Ll2Mm3Nn4Oo5"


def token(purpose: str, subscriber_id: int = 12) -> str:
    return links.make_token(SECRET, subscriber_id=subscriber_id, address="reader@example.org", purpose=purpose)


def stand_in(secret: str) -> str:
    return logsafe.mask(secret)


@pytest.mark.parametrize("route, purpose", [("confirm", "confirm"), ("preferences", "preferences"),
                                            ("unsubscribe", "unsubscribe"), ("resubscribe", "unsubscribe")])
def test_signed_links_in_an_access_log_line(route, purpose):
    t = token(purpose)
    line = Redactor()(f'127.0.0.1:51234 - "GET /{route}/{t}?from=mail HTTP/1.1" 200')
    assert t not in line and t.split(".")[-1] not in line  # not the signature either
    assert line == f'127.0.0.1:51234 - "GET /{route}/{stand_in(t)}?from=mail HTTP/1.1" 200'
    assert stand_in(t).startswith(t[:6] + ELLIPSIS)


def test_two_links_stay_distinguishable_and_one_link_stays_the_same():
    a, b = token("unsubscribe", 12), token("unsubscribe", 13)
    redact = Redactor()
    assert redact(f"/unsubscribe/{a}") != redact(f"/unsubscribe/{b}")
    assert redact(f"/unsubscribe/{a}") == redact(f"/unsubscribe/{a}") == redact(redact(f"/unsubscribe/{a}"))
    assert redact(f"link {links.link_url('https://news.example.org/', SECRET, subscriber_id=12, address='reader@example.org', purpose='preferences')} x") \
        == f"link https://news.example.org/preferences/{stand_in(token('preferences'))} x"
    assert redact(f"a token alone {a}.") == f"a token alone {stand_in(a)}."  # anywhere, not only in a route


@pytest.mark.parametrize("line, secret, kept", [
    (f"delivery=3 subscriber=4 address={SLACK_WEBHOOK} channel=slack outcome=sent", WEBHOOK_SECRET,
     "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/Zq8wX2" + ELLIPSIS),
    (f"address={SLACK_WEBHOOK.replace('hooks.slack.com', 'hooks.slack-gov.com')}", WEBHOOK_SECRET, "Zq8wX2" + ELLIPSIS),
    (f"Authorization: Bearer {API_TOKEN}", API_TOKEN[4:], "Bearer dsp_Aa1Bb2" + ELLIPSIS),
    (f"token {API_TOKEN} used", API_TOKEN[4:], "dsp_Aa1Bb2" + ELLIPSIS),
    ("postgresql+psycopg://dispatch:hunter2-secret@db.internal/dispatch", "hunter2-secret",
     "postgresql+psycopg://dispatch:***@db.internal/dispatch"),
    ("smtp://relay:pa55word@mail.example.org:587", "pa55word", "smtp://relay:***@mail.example.org:587"),
    ("bot xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456" + ELLIPSIS),
    ("https://api.example.org/hook?token=s3cr3tvalue&x=1", "s3cr3tvalue", "?token=s3c" + ELLIPSIS),
    ("https://other.example.org/api/webhooks/1234/AbCdEf0123456789GhIjKlMn", "AbCdEf0123456789GhIjKlMn",
     "https://other.example.org/api/webhooks/1234/AbCdEf" + ELLIPSIS),
])
def test_credentials_in_log_lines(line, secret, kept):
    redacted = Redactor()(line)
    assert secret not in redacted and kept in redacted


def test_listed_webhook_hosts_have_their_secret_cut_too():
    url = "http://127.0.0.1:8026/webhook/desk-hook"
    assert "desk-hook" in Redactor()(url)  # an ordinary short path elsewhere is left alone
    assert "desk-hook" not in Redactor(webhook_hosts=("127.0.0.1",))(url)


def test_ordinary_lines_are_left_as_they_are():
    line = ("2026-11-28 07:01:02 INFO dispatch.delivery delivery=41 subscriber=7 address=ana@example.org "
            "channel=email window=daily:2026-11-28 outcome=sent receipt=<delivery-41@example.org> ts 1700000000.000001 "
            "GET /admin/subscribers/42 https://news.example.org/subscribe?region=americas")
    assert Redactor()(line) == line


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=30), suffix=st.text(max_size=30),
       route=st.sampled_from(logsafe.LINK_ROUTES), subscriber_id=st.integers(1, 10**12))
def test_a_signed_link_never_survives_whatever_surrounds_it(prefix, suffix, route, subscriber_id):
    t = token("unsubscribe", subscriber_id)
    for line in (f"{prefix}/{route}/{t}{suffix}", f"{prefix} {t} {suffix}", f"{prefix}http://h/{route}/{t}"):
        assert t not in Redactor()(line)


def test_hostile_lines_take_linear_time():
    """The redactor sees request paths anyone can choose: its time grows with
    the length of a line, not with its square (ratios, not absolute times)."""
    shapes = ["1" * 2, "a" * 2, "/unsubscribe/", "http://", "dsp_", "1-0123456789.", "x:" * 2, "@", "bearer "]

    def cost(n: int) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for shape in shapes:
                Redactor()(shape * (n // len(shape)))
            best = min(best, time.perf_counter() - started)
        return best

    small, large = cost(20_000), cost(160_000)
    assert large < small * 8 * 4  # 8 times the input; quadratic would be 64 times


def test_configured_handlers_redact_every_record_and_its_traceback():
    logger = logging.getLogger("dispatch.test-logsafe")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(logsafe.LINE_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logsafe.install([logger])
        logsafe.install([logger])  # twice is once
        t = token("preferences")
        logger.warning("address=%s link=/preferences/%s", SLACK_WEBHOOK, t)
        try:
            raise RuntimeError(f"failed posting to {SLACK_WEBHOOK} with {API_TOKEN}")
        except RuntimeError:
            logger.exception("delivery=1: unexpected error")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert WEBHOOK_SECRET not in out and t not in out and API_TOKEN not in out
    assert out.count("Zq8wX2" + ELLIPSIS) == 2 and "Traceback" in out and t[:6] + ELLIPSIS in out
    assert isinstance(handler.formatter, logsafe.RedactingFormatter)
    assert not isinstance(handler.formatter.inner, logsafe.RedactingFormatter)


# --- the real processes ------------------------------------------------------------

def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_") or k == "DISPATCH_TEST_POSTGRES_URL"}
    env.update({"DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}", "DISPATCH_SECRET_KEY": SECRET,
                "DISPATCH_CONFIG": str(tmp_path / "none.toml"), **extra})
    return env


def _get(url: str, *, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_uvicorns_access_log_shows_no_signed_link(tmp_path, mail_sink):
    port = _free_port("127.0.0.1")
    env = _env(tmp_path, DISPATCH_SMTP_HOST=mail_sink.host, DISPATCH_SMTP_PORT=str(mail_sink.port))
    child = subprocess.Popen([sys.executable, "-m", "dispatch", "web", "--port", str(port)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    tokens = {route: token(purpose) for route, purpose in
              (("confirm", "confirm"), ("preferences", "preferences"), ("unsubscribe", "unsubscribe"))}
    tokens["resubscribe"] = token("unsubscribe", 99)
    try:
        deadline = time.monotonic() + 30
        while _get_or_none(f"{base}/subscribe") is None:
            assert child.poll() is None and time.monotonic() < deadline, "dispatch web did not start"
            time.sleep(0.2)
        for route, t in tokens.items():
            _get(f"{base}/{route}/{t}", data=b"" if route == "resubscribe" else None)
        _get(f"{base}/api/subscribers?token={API_TOKEN}")
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    log = child.stdout.read() + child.stderr.read()
    assert f"/unsubscribe/{tokens['unsubscribe'][:6]}{ELLIPSIS}" in log  # the access log is on, and redacted
    for route, t in tokens.items():
        assert t not in log and f"/{route}/{t[:6]}{ELLIPSIS}" in log
    assert API_TOKEN not in log


def _get_or_none(url: str) -> int | None:
    try:
        return _get(url)
    except OSError:
        return None


def test_dispatch_run_logs_no_webhook_secret(tmp_path):
    sink = SlackSink(tmp_path / "slack").start()
    try:
        webhook = sink.webhook_url(f"T0123ABCD/B0456EFGH/{WEBHOOK_SECRET}")
        env = _env(tmp_path, DISPATCH_SLACK_WEBHOOK_HOSTS="127.0.0.1", DISPATCH_OUTBOUND_PRIVATE_NETWORKS="127.0.0.1/32", DISPATCH_SLACK_MIN_INTERVAL="0")

        def dispatch(*args):
            done = subprocess.run([sys.executable, "-m", "dispatch", *args], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done

        dispatch("slack", "add", webhook, "--cadence", "immediate")
        dispatch("sitrep", "import", str(FIXTURES / "standard.txt"), "--as", "ed")
        dispatch("sitrep", "approve", "1", "--as", "chief")  # the two-person rule: someone else approves
        later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        done = dispatch("run", "--once", "--now", later)
    finally:
        sink.stop()
    assert sink.posts, "the digest was posted"
    assert "outcome=sent" in done.stderr  # the delivery line was logged …
    assert WEBHOOK_SECRET not in done.stderr + done.stdout  # … without the webhook's secret
    assert f"/webhook/T0123ABCD/B0456EFGH/{WEBHOOK_SECRET[:6]}{ELLIPSIS}" in done.stderr


def _unguarded(redactor: logsafe.Redactor, text: str) -> str:
    """Every rule run on every line, as before the guards."""
    if not text:
        return text
    text = logsafe._URL.sub(redactor._url, text)
    for expression, group, _guard in logsafe._RULES:
        text = expression.sub(lambda m, g=group: logsafe._masked(m, g), text)
    return text


_PIECES = ["https://", "http://h/", "/unsubscribe/", "/view/", "/archive/12?t=", "12-0123456789.abc.", "-abcdef0123.",
           "0123456789abcdef", "dsp_", "xoxb-", "+d12-", "Bearer ", "basic ", "baſic ", "İ", "ı", "K", "?token=",
           "&t=", "@", ":", "-", ".", "_", " ", "a", "Z", "9", "…"]


@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=4), max_size=30).map("".join))
def test_the_guards_skip_only_rules_that_could_not_change_the_line(text):
    redactor = logsafe.Redactor(webhook_hosts=("hooks.example.org",))
    assert redactor(text) == _unguarded(redactor, text)
