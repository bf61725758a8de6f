"""Health checks: ``/healthz`` (the process answers) and ``/readyz`` (the
database answers and its schema is at the Alembic head; on a sender, the
SMTP relay answered lately or a probe succeeds). Served by the web app and by
``dispatch run --health-port`` (dispatch/web/ops.py).

Each check runs in a thread of its own with a time limit, so a database or
relay that does not answer makes the answer "not ready" within seconds
instead of holding the request (and the orchestrator's probe) for minutes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from dispatch import db

CHECK_SECONDS = 5.0  # each check answers within this, or counts as failed
_checks = ThreadPoolExecutor(4, thread_name_prefix="readyz")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def database(engine: Engine) -> Check:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        current = db.is_current(engine)
    except Exception as exc:  # any failure to reach or read it means "not ready"
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return Check("database", False, f"does not answer: {reason[0] if reason else type(exc).__name__}")
    if not current:
        return Check("database", False, "the schema is not current: run `dispatch init`")
    return Check("database", True, "answers; schema current")


def relay(adapter, *, recent: float, clock=time.monotonic) -> Check:
    """The SMTP relay answered within ``recent`` seconds, or answers a probe now."""
    last = adapter.last_answer
    if last is not None and clock() - last <= recent:
        return Check("smtp", True, f"answered {clock() - last:.0f} s ago")
    problem = adapter.probe(timeout=CHECK_SECONDS)
    return Check("smtp", problem is None, problem or "answered a probe")


def _bounded(name: str, check, *args, **kwargs) -> Check:
    future = _checks.submit(check, *args, **kwargs)
    try:
        return future.result(timeout=CHECK_SECONDS + 1)
    except FutureTimeout:
        return Check(name, False, f"did not answer within {CHECK_SECONDS:.0f} s")


def readiness(engine: Engine, *, mailer=None, recent: float = 300.0) -> list[Check]:
    checks = [_bounded("database", database, engine)]
    if mailer is not None:
        checks.append(_bounded("smtp", relay, mailer, recent=recent))
    return checks


router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """503 with the failing checks named when not ready. A sync route:
    FastAPI runs it in its thread pool, off the event loop."""
    state = request.app.state
    checks = readiness(state.engine, mailer=getattr(state, "ready_mailer", None),
                       recent=state.settings.ready_relay_seconds)
    ready = all(c.ok for c in checks)
    body = {"status": "ready" if ready else "not ready",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
    return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})
