"""The FastAPI application: middleware, error pages and the three parts
(admin pages, subscriber pages, JSON API). ``dispatch web`` serves it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from base64 import b64decode
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, HTTPException, Request
from itsdangerous import BadSignature, TimestampSigner
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.engine import Engine
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from dispatch import __version__, admins, bootstrap, db, notices
from dispatch.compose import Composer
from dispatch.desk import roles
from dispatch.config import Settings
from dispatch.errors import ConflictError, DispatchError, InputError, NotFoundError
from dispatch.retry import RetryPolicy
from dispatch.scheduler import smtp_adapter
from dispatch.web import (admin_pages, api, archive, bounce_pages, feeds, health, metrics_route,
                          provider_webhooks, public_pages, revision_pages, revisions_api, webhook_pages,
                          webhooks_api)
from dispatch.web.middleware import BodyLimit, SecurityHeaders
from dispatch.web.pages import message, templates
from dispatch.web.security import LoginRequired, Throttle
from dispatch.web.uploads import CSV_MAX_BYTES, SITREP_MAX_BYTES

SESSION_MAX_AGE = timedelta(hours=12)
SESSION_COOKIE = "dispatch_session"
FORM_ROOM = 256 * 1024  # the rest of a form around an upload
MAX_BODY_BYTES = CSV_MAX_BYTES + FORM_ROOM  # the largest upload there is: a subscriber CSV
SITREP_BODY_BYTES = 6 * SITREP_MAX_BYTES + FORM_ROOM  # a SITREP as JSON, where a character may take six bytes
DEFAULT_BODY_BYTES = 64 * 1024  # every other form and JSON body: preferences, sign-ups, sign-ins


def upload_allowance(path: str) -> int | None:
    """The routes that take more than a form needs, and how much."""
    if path == "/admin/subscribers/import":
        return MAX_BODY_BYTES
    if path in ("/admin/sitreps/new", "/api/sitreps") or (path.startswith("/admin/sitreps/")
                                                          and path.endswith(("/edit", "/correct"))) or (
            path.startswith("/api/sitreps/") and path.endswith("/corrections")):
        return SITREP_BODY_BYTES
    return None


class BodyAllowance:
    """How much a request may send. The upload routes' allowance goes only
    to a request that carries a valid API token or a session cookie we
    signed for a signed-in admin (checked here, before the body is read:
    FastAPI reads an upload before the route's own sign-in check runs);
    everyone else gets what a form needs."""

    def __init__(self, *, session_key: str, engine: Engine):
        self.signer = TimestampSigner(session_key)
        self.engine = engine

    async def __call__(self, scope) -> int:
        if scope["path"] in provider_webhooks.PATHS:
            # Signed, not signed in: providers batch their events (the route checks the signature).
            return provider_webhooks.BODY_BYTES
        allowance = upload_allowance(scope["path"])
        if allowance is None:
            return DEFAULT_BODY_BYTES
        request = Request(scope)
        if scope["path"].startswith("/api/"):
            authorization = request.headers.get("authorization", "")
            scheme, _, token = authorization.partition(" ")
            known = scheme.lower() == "bearer" and await asyncio.to_thread(self._known_token, token.strip())
        else:
            known = self._admin_cookie(request.cookies.get(SESSION_COOKIE, ""))
        return allowance if known else DEFAULT_BODY_BYTES

    def _known_token(self, token: str) -> bool:
        with db.session_scope(self.engine) as session:
            return admins.find_token(session, token) is not None

    def _admin_cookie(self, cookie: str) -> bool:
        try:
            data = self.signer.unsign(cookie.encode("latin-1", "replace"),
                                      max_age=int(SESSION_MAX_AGE.total_seconds()))
            return "admin_id" in json.loads(b64decode(data))
        except (BadSignature, ValueError, TypeError):
            return False


def create_app(settings: Settings, engine: Engine | None = None, *, mailer=None, ready_mailer=None,
               sns_fetcher=None) -> FastAPI:
    """``mailer`` sends confirmation emails (default: an SMTP adapter from the
    settings), from a notice sender that runs while the app is served.
    ``ready_mailer``: the digest sender's SMTP adapter when the app runs
    inside `dispatch run --web`, whose relay /readyz then checks too.
    ``sns_fetcher``: fetches SNS signing certificates (provider_webhooks.install)."""
    engine = engine or bootstrap.open_engine(settings)
    secret = bootstrap.secret_key(engine, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = app.state.notice_worker = notices.NoticeWorker(notices.NoticeSender(
            engine, environment=app.state.templates.env, brand=app.state.brand, public_url=str(settings.public_url),
            secret=secret, mailer=app.state.mailer, policy=RetryPolicy(max_attempts=settings.max_attempts),
            postal_address=settings.postal_address, bounce_address=settings.bounce_address,
            lease=timedelta(seconds=settings.lease_seconds))).start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    app = FastAPI(
        lifespan=lifespan,
        title="dispatch API", version=__version__,
        description="Push SITREPs, manage subscribers and read the delivery log. Every route needs "
                    "`Authorization: Bearer <token>`; make a token with `dispatch admin token NAME`.",
        docs_url="/api/docs" if settings.api_docs else None, redoc_url=None,
        openapi_url="/api/openapi.json" if settings.api_docs else None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.secret = secret
    app.state.brand = settings.brand
    app.state.templates = templates(settings.templates_dir)
    # Failed sign-ins per (client, username), and per client whatever the username.
    app.state.login_throttle = Throttle(limit=5, window=900)
    app.state.login_client_throttle = Throttle(limit=20, window=900)
    # Subscribe requests per client (each address also has a daily cap: notices.NOTICES_PER_ADDRESS_PER_DAY).
    app.state.signup_throttle = Throttle(limit=10, window=3600)
    app.state.notice_worker = None  # started with the server (lifespan)
    app.state.ready_mailer = ready_mailer
    app.state.readiness = health.Readiness()  # /readyz's checks, shared between its requests
    app.state.installation = bootstrap.installation_id(engine)
    app.state.mailer = mailer or smtp_adapter(settings, installation=app.state.installation)
    app.state.composer = Composer(settings, engine)  # renderers for the previews, built once
    # The session key is derived from the link key, so neither can be used as the other.
    session_key = hmac.new(secret.encode(), b"dispatch web session", hashlib.sha256).hexdigest()
    app.add_middleware(SessionMiddleware, secret_key=session_key, session_cookie=SESSION_COOKIE,
                       max_age=int(SESSION_MAX_AGE.total_seconds()), same_site="lax",
                       https_only=str(settings.public_url).startswith("https:"))
    # Added last, so they run first: a body is capped before the session
    # or any route reads it, and even a refusal carries the headers.
    app.add_middleware(BodyLimit, limit_for=BodyAllowance(session_key=session_key, engine=engine))
    app.add_middleware(SecurityHeaders)
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    if proxies:
        # uvicorn's own: X-Forwarded-For is believed only from these peers
        # (addresses or networks), so no client can claim a new address per request.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(public_pages.router)
    app.include_router(archive.router)
    app.include_router(feeds.router)
    app.include_router(admin_pages.login_router)
    app.include_router(admin_pages.router)
    app.include_router(bounce_pages.router)
    app.include_router(api.router)
    app.include_router(revisions_api.router)
    app.include_router(revision_pages.router)
    app.include_router(webhooks_api.router)
    app.include_router(webhook_pages.router)
    provider_webhooks.install(app, sns_fetcher=sns_fetcher)
    _error_handlers(app)
    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _encodable(text: str) -> str:
    """An error message that can be sent as UTF-8 even when it quotes bad input."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        return RedirectResponse(f"/admin/login?next={exc.next_path}", status_code=303)

    @app.exception_handler(DispatchError)
    async def domain_error(request: Request, exc: DispatchError):
        status = (403 if isinstance(exc, roles.NotPermitted) else 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError)
                  else 400 if isinstance(exc, InputError) else 500)
        text = _encodable(str(exc))
        if _is_api(request):
            return JSONResponse({"detail": text}, status_code=status)
        return message(request, "That did not work", text, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if _is_api(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed", 413: "Too large", 429: "Too many tries"}
        text = exc.detail if isinstance(exc.detail, str) else "The request could not be handled."
        response = message(request, titles.get(exc.status_code, "That did not work"), text,
                           status_code=exc.status_code)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = _encodable("; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                                        for e in exc.errors()))
        # Without the "input" pydantic echoes: it may be the whole body, or
        # hold text (a lone surrogate) that cannot even be encoded as a reply.
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        if _is_api(request):
            return JSONResponse({"detail": problems, "errors": jsonable_encoder(errors)}, status_code=422)
        return message(request, "Some fields are not right", problems, status_code=422)
