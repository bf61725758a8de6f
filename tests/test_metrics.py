"""/metrics: parses with prometheus_client's own parser, its counters move
by exactly the deliveries a `dispatch run --once` made, the queue is read
from the database, and only a token holder or a loopback client may read it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from dispatch.sink import _free_port
from dispatch.web import create_app

from .deliverytools import LATER, seed
from .servers import scripted_smtp
from .test_web_process import wait_for
from .webtools import settings_for

TOKEN = "scrape-token-0123456789"


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value}; a text that does not parse fails the test."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_by_exactly_the_deliveries_a_run_made(database_url, engine, tmp_path, run, monkeypatch):
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.refuse["gone@example.org"] = "550 5.1.1 no such user"
    try:
        seed(engine, ["ana@example.org", "ben@example.org", "cy@example.org", "gone@example.org"])
        settings = settings_for(database_url, sink).model_copy(update={"metrics_token": SecretStr(TOKEN)})
        client = TestClient(create_app(settings, engine))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        before = samples(client.get("/metrics", headers=auth).text)

        for name, setting in (("DATABASE_URL", database_url), ("SMTP_HOST", sink.host),
                              ("SMTP_PORT", str(sink.port)), ("MAIL_FROM", "news@example.org")):
            monkeypatch.setenv(f"DISPATCH_{name}", setting)
        done = run("run", "--once", "--json", "--now", LATER.isoformat())
        assert done.exit_code == 1, done.output  # one delivery failed

        answer = client.get("/metrics", headers=auth)
    finally:
        sink.stop()
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    after = samples(answer.text)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("dispatch_sends_total", kind="digest", channel="email", outcome="sent") == 3
    assert moved("dispatch_sends_total", kind="digest", channel="email", outcome="failed") == 1
    assert moved("dispatch_send_seconds_count", channel="email") == 4
    assert moved("dispatch_bounces_total") == 1
    assert moved("dispatch_planned_deliveries_total") == 4
    assert moved("dispatch_lease_reclaims_total") == 0
    # What the database holds, whoever sent it.
    assert value(after, "dispatch_deliveries", status="sent", channel="email") == 3
    assert value(after, "dispatch_deliveries", status="failed", channel="email") == 1
    assert value(after, "dispatch_queue_due") == 0 and value(after, "dispatch_database_up") == 1
    assert any(name == "python_gc_objects_collected_total" for name, _ in after)  # process metrics come free


def test_the_queue_shows_due_deliveries_and_their_age(database_url, engine, mail_sink):
    from dispatch import planner

    seed(engine, ["ana@example.org", "ben@example.org"])
    planner.plan_due(engine, now=LATER)
    app = create_app(settings_for(database_url, mail_sink).model_copy(update={"metrics_token": SecretStr(TOKEN)}),
                     engine)
    found = samples(TestClient(app).get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text)
    assert value(found, "dispatch_queue_due") == 2
    assert value(found, "dispatch_deliveries", status="pending", channel="email") == 2
    assert value(found, "dispatch_queue_oldest_due_age_seconds") > 0  # LATER is in the past: due since then


def test_metrics_need_the_token_or_a_loopback_client(sqlite_url, engine, mail_sink):
    open_app = TestClient(create_app(settings_for(sqlite_url, mail_sink), engine))
    assert open_app.get("/metrics").status_code == 403  # the test client is not a loopback peer
    guarded = TestClient(create_app(settings_for(sqlite_url, mail_sink).model_copy(
        update={"metrics_token": SecretStr(TOKEN)}), engine))
    assert guarded.get("/metrics").status_code == 403
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_run_serves_metrics_to_loopback_and_not_through_a_proxy(tmp_path, mail_sink):
    port = _free_port("127.0.0.1")
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}",
           "DISPATCH_SMTP_HOST": mail_sink.host, "DISPATCH_SMTP_PORT": str(mail_sink.port)}
    child = subprocess.Popen([sys.executable, "-m", "dispatch", "run", "--metrics-port", str(port),
                              "--health-port", str(port)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", child)  # one server for both
        # The server answers from start-up on; the first planning run may still be going.
        deadline = time.monotonic() + 30
        while True:
            status, text = _get(f"http://127.0.0.1:{port}/metrics")
            found = samples(text) if status == 200 else {}
            if status != 200 or value(found, "dispatch_planner_last_run_timestamp_seconds") > 0 \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        proxied, _ = _get(f"http://127.0.0.1:{port}/metrics", {"X-Forwarded-For": "203.0.113.9"})
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    assert status == 200 and proxied == 403
    assert value(found, "dispatch_workers_live", role="all") == 1 and value(found, "dispatch_planner_live") == 1
    assert value(found, "dispatch_planner_last_run_timestamp_seconds") > 0


def test_multiprocess_mode_adds_up_every_worker(tmp_path, sqlite_url):
    folder = tmp_path / "prom"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    worker = textwrap.dedent("""
        from types import SimpleNamespace
        from dispatch import metrics
        for _ in range(3):
            metrics.sent(SimpleNamespace(channel="email", status="sent"))
    """)
    for _ in range(2):  # two worker processes
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    scrape = textwrap.dedent(f"""
        from dispatch import bootstrap, db, metrics
        engine = db.create_engine({sqlite_url!r})
        bootstrap.init_database(engine)
        print(metrics.render(metrics.registry_for(engine)).decode())
    """)
    done = subprocess.run([sys.executable, "-c", scrape], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = samples(done.stdout)
    assert value(found, "dispatch_sends_total", kind="digest", channel="email", outcome="sent") == 6
    assert value(found, "dispatch_database_up") == 1
