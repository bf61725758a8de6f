"""The small server `dispatch run` starts for its orchestrator and its
monitoring: /healthz, /readyz (dispatch/web/health.py) and /metrics
(dispatch/metrics.py), on --health-port and --metrics-port. No admin pages,
no API, no signed links: nothing here reads a request body."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from dispatch.config import Settings
from dispatch.web import health as health_routes
from dispatch.web import metrics_route


def create_ops_app(settings: Settings, engine: Engine, *, mailer=None, health: bool = True,
                   metrics: bool = True) -> FastAPI:
    """``mailer``: the SMTP adapter whose relay /readyz checks (a sender), or None (a planner)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.ready_mailer = mailer
    app.state.readiness = health_routes.Readiness()
    if health:
        app.include_router(health_routes.router)
    if metrics:
        app.include_router(metrics_route.router)
    return app
