"""/healthz and /readyz on the web app and on `dispatch run --health-port`:
ready while the database answers at the current schema (and, on a sender,
the SMTP relay answers); not ready, naming why, when it goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from dispatch.adapters.smtp import SmtpAdapter
from dispatch.config import Settings
from dispatch.sink import _free_port
from dispatch.web.ops import create_ops_app
from tests.conftest import _libpq_dsn
from tests.test_web_process import wait_for


def take_database_away(database_url: str, engine) -> None:
    engine.dispose()
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database)
        path.rename(path.with_name("moved-away.db"))
    else:
        admin = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
        with psycopg.connect(_libpq_dsn(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')


# The checks' details go to a loopback client (or one with the metrics token) only.
LOOPBACK = ("127.0.0.1", 50000)


def test_readyz_flips_when_the_database_goes_away(web, database_url):
    assert web.client.get("/healthz").json() == {"status": "ok"}
    local = TestClient(web.client.app, client=LOOPBACK)
    ready = local.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["ok"] is True

    take_database_away(database_url, web.engine)

    gone = local.get("/readyz")
    assert gone.status_code == 503
    assert gone.json()["status"] == "not ready" and gone.json()["checks"]["database"]["ok"] is False
    outside = web.client.get("/readyz")  # any other client: the status alone
    assert outside.status_code == 503 and outside.json() == {"status": "not ready"}
    assert web.client.get("/healthz").status_code == 200  # the process itself still answers


def test_a_database_behind_the_current_schema_is_not_ready(web, engine):
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    answer = TestClient(web.client.app, client=LOOPBACK).get("/readyz")
    assert answer.status_code == 503 and "dispatch init" in answer.json()["checks"]["database"]["detail"]


def adapter_for(port: int) -> SmtpAdapter:
    return SmtpAdapter(host="127.0.0.1", port=port, mail_from="News <news@example.org>", timeout=2)


def test_a_sender_is_ready_only_while_its_relay_answers(engine, database_url, mail_sink):
    settings = Settings(database_url=database_url)
    live = TestClient(create_ops_app(settings, engine, mailer=adapter_for(mail_sink.port)), client=LOOPBACK)
    answer = live.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"]["smtp"] == {"ok": True, "detail": "answered a probe"}
    assert live.get("/readyz").json()["checks"]["smtp"]["detail"].startswith("answered ")  # recent: no new probe

    dead = TestClient(create_ops_app(settings, engine, mailer=adapter_for(_free_port("127.0.0.1"))), client=LOOPBACK)
    answer = dead.get("/readyz")
    assert answer.status_code == 503
    assert "cannot connect" in answer.json()["checks"]["smtp"]["detail"]
    assert answer.json()["checks"]["database"]["ok"] is True

    planner = TestClient(create_ops_app(settings, engine, mailer=None), client=LOOPBACK)  # a planner sends nothing
    assert planner.get("/readyz").status_code == 200 and "smtp" not in planner.get("/readyz").json()["checks"]


def test_run_serves_health_on_its_own_port(tmp_path, mail_sink):
    port = _free_port("127.0.0.1")
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}",
           "DISPATCH_SMTP_HOST": mail_sink.host, "DISPATCH_SMTP_PORT": str(mail_sink.port)}
    child = subprocess.Popen([sys.executable, "-m", "dispatch", "run", "--health-port", str(port)], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert '"ok"' in wait_for(f"http://127.0.0.1:{port}/healthz", child)
        ready = wait_for(f"http://127.0.0.1:{port}/readyz", child)
        assert '"status":"ready"' in ready and '"smtp"' in ready
    finally:
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=30)
        log = child.stderr.read()
    assert code in (0, -signal.SIGTERM), log
    assert "Traceback" not in log


def test_health_port_does_not_go_with_once(tmp_path):
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}"}
    done = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--health-port", "9"], env=env,
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "--health-port" in done.stderr


class CountingAdapter(SmtpAdapter):
    """The real adapter, counting the probes it makes (each one an SMTP connection)."""

    probes = 0

    def probe(self, *, timeout: float = 5.0):
        type(self).probes += 1
        return super().probe(timeout=timeout)


def test_a_flood_of_readyz_makes_one_smtp_probe_and_shows_no_details(engine, database_url):
    from concurrent.futures import ThreadPoolExecutor

    CountingAdapter.probes = 0
    dead = CountingAdapter(host="127.0.0.1", port=_free_port("127.0.0.1"), mail_from="News <news@example.org>",
                           timeout=2)
    app = create_ops_app(Settings(database_url=database_url), engine, mailer=dead)
    outside = TestClient(app)  # host "testclient": not loopback, no token
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: outside.get("/readyz"), range(40)))
    assert {a.status_code for a in answers} == {503}
    assert all(a.json() == {"status": "not ready"} for a in answers)  # no relay host, no error text
    assert CountingAdapter.probes == 1
    # A trusted client sees why, from the same probe.
    local = TestClient(app, client=LOOPBACK).get("/readyz").json()
    assert "cannot connect" in local["checks"]["smtp"]["detail"] and CountingAdapter.probes == 1


def test_the_metrics_token_shows_readyz_details(engine, database_url):
    from pydantic import SecretStr

    app = create_ops_app(Settings(database_url=database_url, metrics_token=SecretStr("s3cret-token")), engine)
    client = TestClient(app, client=LOOPBACK)
    assert client.get("/readyz").json() == {"status": "ready"}  # with a token set, loopback is not enough
    shown = client.get("/readyz", headers={"Authorization": "Bearer s3cret-token"}).json()
    assert shown["checks"]["database"]["ok"] is True
