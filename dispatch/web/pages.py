"""What every server-rendered page shares: the template environment, the
page context (CSRF token, signed-in admin, flash messages) and error pages."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dispatch import db, paging
from dispatch.render import build_environment
from dispatch.web.security import CSRF_FIELD, csrf_token


def db_session(request: Request):
    """A dependency: one database session per request, committed when the handler returns."""
    with db.session_scope(request.app.state.engine) as session:
        yield session


def templates(templates_dir: Path | None) -> Jinja2Templates:
    # Its own environment (Starlette adds url_for to it), with the same
    # loader and autoescaping as the emails: every stored text renders as text.
    return Jinja2Templates(env=build_environment(templates_dir))


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """A message shown once, on the next page (kind: ok | error)."""
    request.session.setdefault("flash", []).append([kind, message])


def page(request: Request, name: str, *, status_code: int = 200, **context) -> HTMLResponse:
    context.update(
        request=request,
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(request),
        admin=getattr(request.state, "admin", None),
        flashes=request.session.pop("flash", []),
        brand=request.app.state.brand,
    )
    return request.app.state.templates.TemplateResponse(request, f"web/{name}", context, status_code=status_code)


def message(request: Request, title: str, text: str, *, status_code: int = 200, link: tuple[str, str] | None = None):
    """A page that says one thing (a clear error, a done action)."""
    return page(request, "message.html", status_code=status_code, title=title, text=text, link=link)


def pager_links(request: Request, found: paging.Page) -> dict:
    """Links to the pages beside this one (keyset cursors, dispatch.paging),
    keeping every filter of this request: the admin lists and the archive."""
    def link(**cursor) -> str:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("after", "before")]
        return request.url.path + "?" + urlencode(params + list(cursor.items()))
    return {"next": link(after=found.next) if found.next is not None else None,
            "previous": link(before=found.previous) if found.previous is not None else None}
