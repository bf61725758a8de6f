"""DISPATCH_LOG_FORMAT=json: one JSON object a line, a delivery's fields as
keys of their own, and no signed link, token or webhook secret in any of
them — through a configured handler and from the real processes."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from dispatch import logsafe
from dispatch.sink import SlackSink, _free_port

from .conftest import FIXTURES
from .test_logsafe import API_TOKEN, ELLIPSIS, SLACK_WEBHOOK, WEBHOOK_SECRET, _env, _get, _get_or_none, token

BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"


def json_lines(text: str) -> list[dict]:
    """Every line parsed; a line that is not one JSON object fails the test."""
    records = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
    return records


def test_a_json_handler_redacts_message_fields_and_traceback():
    logger = logging.getLogger("dispatch.test-json-logs")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    t = token("preferences")
    try:
        logsafe.install([logger], json_lines=True)
        logger.warning("link=/preferences/%s\nsecond line", t,
                       extra={"fields": {"delivery": 7, "address": SLACK_WEBHOOK, "nested": [{"key": API_TOKEN}]}})
        try:
            raise RuntimeError(f"failed posting with {BOT_TOKEN}")
        except RuntimeError:
            logger.exception("delivery=1: unexpected error")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    first, second = json_lines(out)
    assert first["delivery"] == 7 and first["level"] == "WARNING" and first["logger"] == "dispatch.test-json-logs"
    assert first["time"].endswith("Z") and "second line" in first["message"]
    assert first["address"].endswith("Zq8wX2" + ELLIPSIS + first["address"].rsplit(ELLIPSIS, 1)[1])
    assert "Traceback" in second["exception"]
    for secret in (t, WEBHOOK_SECRET, API_TOKEN, BOT_TOKEN):
        assert secret not in out


def test_dispatch_run_logs_json_lines_with_the_delivery_fields(tmp_path, mail_sink):
    sink = SlackSink(tmp_path / "slack").start()
    try:
        webhook = sink.webhook_url(f"T0123ABCD/B0456EFGH/{WEBHOOK_SECRET}")
        env = _env(tmp_path, DISPATCH_SLACK_WEBHOOK_HOSTS="127.0.0.1", DISPATCH_OUTBOUND_PRIVATE_NETWORKS="127.0.0.1/32", DISPATCH_SLACK_MIN_INTERVAL="0",
                   DISPATCH_SMTP_HOST=mail_sink.host, DISPATCH_SMTP_PORT=str(mail_sink.port),
                   DISPATCH_SLACK_BOT_TOKEN=BOT_TOKEN, DISPATCH_LOG_FORMAT="json")

        def dispatch(*args):
            done = subprocess.run([sys.executable, "-m", "dispatch", *args], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done

        dispatch("slack", "add", webhook, "--cadence", "immediate")
        dispatch("subscriber", "add", "ana@example.org", "--cadence", "immediate")
        dispatch("--as", "ed", "sitrep", "import", str(FIXTURES / "standard.txt"))
        dispatch("--as", "chief", "sitrep", "approve", "1")  # two people: the rule is on here
        later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        done = dispatch("run", "--once", "--now", later)
    finally:
        sink.stop()
    records = json_lines(done.stderr)
    deliveries = [r for r in records if r["logger"] == "dispatch.delivery"]
    assert sorted(r["channel"] for r in deliveries) == ["email", "slack"]
    for r in deliveries:
        assert r["outcome"] == "sent" and r["receipt"] and isinstance(r["delivery"], int)
        assert {"subscriber", "address", "window", "sitreps", "attempt"} <= r.keys()
    slack = next(r for r in deliveries if r["channel"] == "slack")
    assert f"/B0456EFGH/{WEBHOOK_SECRET[:6]}{ELLIPSIS}" in slack["address"]
    assert WEBHOOK_SECRET not in done.stderr and BOT_TOKEN not in done.stderr


def test_dispatch_web_access_log_in_json_carries_no_signed_link(tmp_path, mail_sink):
    port = _free_port("127.0.0.1")
    env = _env(tmp_path, DISPATCH_SMTP_HOST=mail_sink.host, DISPATCH_SMTP_PORT=str(mail_sink.port),
               DISPATCH_LOG_FORMAT="json")
    child = subprocess.Popen([sys.executable, "-m", "dispatch", "web", "--port", str(port)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    t = token("unsubscribe")
    try:
        deadline = time.monotonic() + 30
        while _get_or_none(f"{base}/healthz") is None:
            assert child.poll() is None and time.monotonic() < deadline, "dispatch web did not start"
            time.sleep(0.2)
        _get(f"{base}/unsubscribe/{t}")
        _get(f"{base}/api/subscribers?token={API_TOKEN}")
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    records = json_lines(child.stdout.read()) + json_lines(child.stderr.read())  # access log: stdout
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(f"/unsubscribe/{t[:6]}{ELLIPSIS}" in r["message"] for r in access), records
    text = json.dumps(records)
    assert t not in text and API_TOKEN not in text
