"""The FastAPI application: middleware, error pages and the three parts
(admin pages, subscriber pages, JSON API). ``dispatch web`` serves it."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.engine import Engine
from starlette.middleware.sessions import SessionMiddleware

from dispatch import __version__, bootstrap
from dispatch.compose import Composer
from dispatch.config import Settings
from dispatch.errors import ConflictError, DispatchError, InputError, NotFoundError
from dispatch.scheduler import smtp_adapter
from dispatch.web import admin_pages, api, public_pages
from dispatch.web.pages import message, templates
from dispatch.web.uploads import CSV_MAX_BYTES
from dispatch.web.security import LoginRequired, Throttle

SESSION_MAX_AGE = timedelta(hours=12)
MAX_BODY_BYTES = CSV_MAX_BYTES + 256 * 1024  # the largest upload, with room for the form around it
BRAND = "Dispatch Briefing"


def create_app(settings: Settings, engine: Engine | None = None, *, mailer=None,
               login_throttle: Throttle | None = None, signup_throttle: Throttle | None = None) -> FastAPI:
    """``mailer`` sends confirmation emails (default: an SMTP adapter from the settings)."""
    engine = engine or bootstrap.open_engine(settings)
    secret = bootstrap.secret_key(engine, settings)
    app = FastAPI(
        title="dispatch API", version=__version__,
        description="Push SITREPs, manage subscribers and read the delivery log. Every route needs "
                    "`Authorization: Bearer <token>`; make a token with `dispatch admin token NAME`.",
        docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.secret = secret
    app.state.brand = BRAND
    app.state.templates = templates(settings.templates_dir)
    app.state.login_throttle = login_throttle or Throttle(limit=5, window=900)  # failed sign-ins
    app.state.signup_throttle = signup_throttle or Throttle(limit=10, window=3600)  # confirmation emails
    app.state.mailer = mailer or smtp_adapter(settings)
    app.state.composer = Composer(settings, engine)  # renderers for the previews, built once
    _limit_body(app)  # added before the sessions, so it runs inside them (its error page has a session)
    # The session key is derived from the link key, so neither can be used as the other.
    session_key = hmac.new(secret.encode(), b"dispatch web session", hashlib.sha256).hexdigest()
    app.add_middleware(SessionMiddleware, secret_key=session_key, session_cookie="dispatch_session",
                       max_age=int(SESSION_MAX_AGE.total_seconds()), same_site="lax",
                       https_only=str(settings.public_url).startswith("https:"))
    app.include_router(public_pages.router)
    app.include_router(admin_pages.login_router)
    app.include_router(admin_pages.router)
    app.include_router(api.router)
    _error_handlers(app)
    return app


def _limit_body(app: FastAPI) -> None:
    @app.middleware("http")
    async def refuse_oversized(request: Request, call_next):
        # Refuse before reading: Starlette would spool a whole upload to disk
        # before the form handlers could check its size. (A chunked body has no
        # length; the handlers' own limits still apply to it.)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            text = f"The request is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB."
            if _is_api(request):
                return JSONResponse({"detail": text}, status_code=413)
            return message(request, "Too large", text, status_code=413)
        return await call_next(request)


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
        status = (404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError)
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
