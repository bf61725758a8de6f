"""The admin page for event webhooks (dispatch/events): list, add, remove.
Behind the same admin dependency as every other admin page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlmodel import Session
from starlette.datastructures import FormData

from dispatch import db
from dispatch.errors import InputError
from dispatch.events import catalogue, endpoints
from dispatch.desk.roles import Permission as P
from dispatch.web import access
from dispatch.web.access import requires
from dispatch.web.admin_pages import Id, _back, form_post
from dispatch.web.pages import db_session, flash, page
from dispatch.web.security import require_csrf, submitted_form

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(access.principal)])


def _page(request: Request, session: Session, *, created=None, error=None, url="", status_code=200):
    hooks = [endpoints.as_dict(h) for h in endpoints.all_webhooks(session)]
    return page(request, "admin/webhooks.html", hooks=hooks, types=catalogue.TYPES, created=created, error=error,
                url=url, status_code=status_code)


@router.get("/webhooks", dependencies=[requires(P.manage)])
def webhook_list(request: Request, session: Session = Depends(db_session)):
    return _page(request, session)


@router.post("/webhooks", dependencies=[requires(P.manage), Depends(require_csrf)])
def webhook_add(request: Request, form: FormData = Depends(submitted_form)):
    url = str(form.get("url", ""))[:endpoints.MAX_URL + 1]
    try:
        with db.session_scope(request.app.state.engine) as session:
            hook = endpoints.add(session, url, events=form.getlist("events"),
                                 private_networks=request.app.state.settings.outbound_private_networks)
            created = endpoints.as_dict(hook, with_secret=True)
    except InputError as exc:
        with db.session_scope(request.app.state.engine) as session:
            return _page(request, session, error=str(exc), url=url, status_code=400)
    # The secret is shown on this answer only (never in a redirect or the session cookie).
    with db.session_scope(request.app.state.engine) as session:
        return _page(request, session, created=created)


@router.post("/webhooks/{webhook_id}/remove", **form_post(P.manage))
def webhook_remove(webhook_id: Id, request: Request, session: Session = Depends(db_session)):
    endpoints.remove(session, webhook_id)
    flash(request, f"Event webhook {webhook_id} removed, with its undelivered events.")
    return _back("/admin/webhooks")
