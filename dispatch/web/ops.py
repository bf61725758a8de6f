"""The small server `dispatch run` starts for its orchestrator and its
monitoring: /healthz, /readyz (dispatch/web/health.py) and /metrics
(dispatch/metrics.py), on --health-port and --metrics-port. No admin pages,
no API, no signed links: nothing here reads a request body."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from dispatch.config import Settings
from dispatch.web import health


def create_ops_app(settings: Settings, engine: Engine, *, mailer=None, metrics: bool = False) -> FastAPI:
    """``mailer``: the SMTP adapter whose relay /readyz checks (a sender), or None (a planner)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.ready_mailer = mailer
    app.include_router(health.router)
    if metrics:
        from dispatch.web import metrics_route

        app.include_router(metrics_route.open_router)
    return app
