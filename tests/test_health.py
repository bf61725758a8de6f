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


def test_readyz_flips_when_the_database_goes_away(web, database_url):
    assert web.client.get("/healthz").json() == {"status": "ok"}
    ready = web.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["ok"] is True

    take_database_away(database_url, web.engine)

    gone = web.client.get("/readyz")
    assert gone.status_code == 503
    assert gone.json()["status"] == "not ready" and gone.json()["checks"]["database"]["ok"] is False
    assert web.client.get("/healthz").status_code == 200  # the process itself still answers


def test_a_database_behind_the_current_schema_is_not_ready(web, engine):
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    answer = web.client.get("/readyz")
    assert answer.status_code == 503 and "dispatch init" in answer.json()["checks"]["database"]["detail"]


def adapter_for(port: int) -> SmtpAdapter:
    return SmtpAdapter(host="127.0.0.1", port=port, mail_from="News <news@example.org>", timeout=2)


def test_a_sender_is_ready_only_while_its_relay_answers(engine, database_url, mail_sink):
    settings = Settings(database_url=database_url)
    live = TestClient(create_ops_app(settings, engine, mailer=adapter_for(mail_sink.port)))
    answer = live.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"]["smtp"] == {"ok": True, "detail": "answered a probe"}
    assert live.get("/readyz").json()["checks"]["smtp"]["detail"].startswith("answered ")  # recent: no new probe

    dead = TestClient(create_ops_app(settings, engine, mailer=adapter_for(_free_port("127.0.0.1"))))
    answer = dead.get("/readyz")
    assert answer.status_code == 503
    assert "cannot connect" in answer.json()["checks"]["smtp"]["detail"]
    assert answer.json()["checks"]["database"]["ok"] is True

    planner = TestClient(create_ops_app(settings, engine, mailer=None))  # a planner sends nothing
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
