"""Health checks: ``/healthz`` (the process answers) and ``/readyz`` (the
database answers and its schema is at the Alembic head; on a sender, the
SMTP relay answered lately or a probe succeeds). Served by the web app and by
``dispatch run --health-port`` (dispatch/web/ops.py).

Each check runs in a thread of its own with a time limit, so a database or
relay that does not answer makes the answer "not ready" within seconds
instead of holding the request (and the orchestrator's probe) for minutes.

/readyz is public (an orchestrator's probe carries no credentials), so what
it does and says is bounded: requests that arrive while a check is under
way share its answer instead of starting their own, the SMTP probe runs at
most once every PROBE_INTERVAL seconds (a flood of requests never makes the
server open SMTP connections), and the checks' details (relay host, database
errors) are shown only to a client that may read /metrics (the metrics
token, or loopback); everyone else gets the status alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from dispatch import db
from dispatch.web.metrics_route import trusted_client

CHECK_SECONDS = 5.0  # each check answers within this, or counts as failed
PROBE_INTERVAL = 30.0  # seconds: a probe's answer stands this long
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


class _Shared:
    """One run of a check at a time: a caller that arrives while it runs
    waits for it and takes its answer; an answer is kept ``keep`` seconds."""

    def __init__(self, keep: float, clock: Callable[[], float]):
        self.keep = keep
        self.clock = clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._answer: Check | None = None

    def get(self, name: str, run: Callable[[], Check]) -> Check:
        arrived = self.clock()
        if not self._lock.acquire(timeout=CHECK_SECONDS + 2):
            return Check(name, False, f"did not answer within {CHECK_SECONDS:.0f} s")
        try:
            if self._answer is not None and self._at is not None and (
                    self._at >= arrived or self.clock() - self._at < self.keep):
                return self._answer
            self._answer, self._at = run(), self.clock()
            return self._answer
        finally:
            self._lock.release()


class Readiness:
    """The checks of one app, shared between its requests (see the module's text)."""

    def __init__(self, *, probe_interval: float = PROBE_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._database = _Shared(0.0, clock)
        self._probe = _Shared(probe_interval, clock)

    def check(self, engine: Engine, *, mailer=None, recent: float = 300.0) -> list[Check]:
        checks = [self._database.get("database", lambda: _bounded("database", database, engine))]
        if mailer is not None:
            last = mailer.last_answer
            if last is not None and self.clock() - last <= recent:
                checks.append(Check("smtp", True, f"answered {self.clock() - last:.0f} s ago"))
            else:
                checks.append(self._probe.get("smtp", lambda: _bounded("smtp", relay, mailer, recent=recent)))
        return checks


router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """503 when not ready; the failing checks are named to a trusted client
    only. A sync route: FastAPI runs it in its thread pool, off the event loop."""
    state = request.app.state
    shared = getattr(state, "readiness", None)
    if shared is None:
        shared = state.readiness = Readiness()
    checks = shared.check(state.engine, mailer=getattr(state, "ready_mailer", None),
                          recent=state.settings.ready_relay_seconds)
    ready = all(c.ok for c in checks)
    body: dict = {"status": "ready" if ready else "not ready"}
    if trusted_client(request):
        body["checks"] = {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}
    return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})
