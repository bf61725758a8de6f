"""Admin pages: dashboard, SITREPs, subscribers and Slack channels,
deliveries, previews. Every route but the login form sits behind a
signed-in admin (on the router) and names the permission its role needs."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import date, datetime, time, timezone
from urllib.parse import urlsplit

import sqlalchemy as sa
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Request, UploadFile
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlmodel import Session, col, select
from starlette.datastructures import FormData

from dispatch import (
    admins, compose, csv_export, csv_import, db, digest, fields, import_jobs, ledger, paging, pauses, sitrep_text,
    sitreps, subscribers, taxonomy, views,
)
from dispatch.coordination import live_workers
from dispatch.errors import InputError, WorkflowError
from dispatch.models import (
    AdminUser,
    Cadence,
    Delivery,
    DeliveryStatus,
    Sitrep,
    SitrepStatus,
    Subscriber,
    SubscriberKind,
    SubscriberStatus,
    utcnow,
)
from dispatch.desk import audit, roles
from dispatch.inbound import events
from dispatch.desk.roles import Permission as P
from dispatch.web import access, forms, uploads
from dispatch.web.access import requires
from dispatch.web.pages import db_session, flash, page, pager_links
from dispatch.web.security import (

    client_address,

    login_keys,
    refuse_if_full,
    require_csrf,
    sign_in,
    sign_out,
    submitted_form,
)

login_router = APIRouter(prefix="/admin", include_in_schema=False)


# Signed in for every page (on the router); each page also names the
# permission it needs (tests/test_roles.py finds any that does not).
router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(access.principal)])
# An id beyond what an id column holds is refused (422, naming it) before it reaches the database.
Id = Annotated[int, Path(ge=1, le=fields.MAX_ID)]


def form_post(permission: P) -> dict:
    return {"dependencies": [requires(permission), Depends(require_csrf)], "status_code": 303}



def _back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _safe_next(value: str | None) -> str:
    """Only a path on this site: the login form must not become an open redirect."""
    parts = urlsplit(value or "")
    if value and value.startswith("/") and not value.startswith("//") and not parts.netloc and not parts.scheme:
        return value
    return "/admin"


# --- signing in and out --------------------------------------------------------

@login_router.get("/login")
def login_form(request: Request, next: str = "/admin"):
    return page(request, "admin/login.html", next=_safe_next(next), username="", error=None)


@login_router.post("/login", dependencies=[Depends(require_csrf)])
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/admin")):
    state = request.app.state
    pair, client = login_keys(client_address(request), username)
    # Counted before the password is checked: a burst of concurrent guesses
    # cannot all slip through a limit that none of them has counted yet.
    refuse_if_full((state.login_throttle, pair), (state.login_client_throttle, client),
                   what="sign-in attempts", take=True)
    # The hash is read, then checked outside any transaction: an Argon2 check
    # must never hold SQLite's write lock while other requests wait for it.
    with db.session_scope(state.engine) as session:
        found = admins.find_admin(session, username) if admins.plausible_username(username) else None
        admin_id, stored = (found.id, found.password_hash) if found else (None, None)
    try:
        right = admins.verify(stored, password)
    except admins.Busy as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    if not right:
        return page(request, "admin/login.html", status_code=401, next=_safe_next(next), username=username,
                    error="Wrong username or password.")
    with db.session_scope(state.engine) as session:
        admin = session.get(AdminUser, admin_id)
        if admin is None:  # removed in the meantime
            return page(request, "admin/login.html", status_code=401, next=_safe_next(next), username=username,
                        error="Wrong username or password.")
        admins.record_sign_in(session, admin, password)
    state.login_throttle.forget(pair)
    sign_in(request, admin)
    return _back(_safe_next(next))


@router.post("/logout", **form_post(P.read))
def logout(request: Request):
    sign_out(request, request.state.admin)
    return _back("/admin/login")


# --- dashboard -------------------------------------------------------------------

@router.get("", dependencies=[requires(P.read)])
def dashboard(request: Request):
    now = utcnow()
    # Read before opening the page's session: on SQLite a second one would wait for it.
    workers = live_workers(request.app.state.engine, now=now)
    paused = pauses.load(request.app.state.engine)
    with db.session_scope(request.app.state.engine) as session:
        return _dashboard(request, session, now=now, workers=workers, paused=paused)


def _dashboard(request: Request, session: Session, *, now: datetime, workers: list, paused: list):
    midnight = datetime.combine(now.date(), time(0), tzinfo=timezone.utc)
    today = ledger.today_by_status(session, since=midnight)
    # Immediate readers have no due time: reading from the first non-NULL one
    # of the (status, next_due_at) index skips them all.
    next_window = session.execute(
        select(sa.func.min(Subscriber.next_due_at)).where(
            Subscriber.status == SubscriberStatus.active, col(Subscriber.next_due_at).is_not(None),
            Subscriber.cadence != Cadence.immediate)).scalar()
    return page(
        request, "admin/dashboard.html",
        drafts=sitreps.list_sitreps(session, status=SitrepStatus.draft, limit=20),
        today=[(s.value, today.get(s, 0)) for s in DeliveryStatus],
        failures=ledger.log(session, status=DeliveryStatus.failed, limit=10),
        next_window=next_window, workers=workers, paused=paused, held=ledger.held_ids(session),
        subscriber_counts=subscribers.counts_by_status(session),
    )


# --- SITREPs ---------------------------------------------------------------------

@router.get("/sitreps", dependencies=[requires(P.read)])
def sitrep_list(request: Request, q: str = "", status: str = "", after: str = "", before: str = "",
                session: Session = Depends(db_session)):
    found = sitreps.sitrep_page(session, status=_chosen(SitrepStatus, status), search=q or None, limit=PAGE_ROWS,
                                **_cursors(after, before))
    return page(request, "admin/sitreps.html", rows=found.items, pager=pager_links(request, found), now=utcnow(),
                q=q, status=status, statuses=[s.value for s in SitrepStatus])


@router.get("/sitreps/new", dependencies=[requires(P.edit)])
def sitrep_new(request: Request):
    return page(request, "admin/sitrep_new.html", text="", error=None)


@router.post("/sitreps/new", dependencies=[requires(P.edit), Depends(require_csrf)])
def sitrep_import(request: Request, text: str = Form(""), file: UploadFile | None = File(None),
                  approve: bool = Form(False)):
    if approve and not request.state.admin.may("approve"):
        raise HTTPException(403, roles.refusal(request.state.admin.role, P.approve))
    source = uploads.read_text(file, text, limit=uploads.SITREP_MAX_BYTES, what="SITREP")
    name = file.filename if file is not None and file.filename else "pasted text"
    try:
        parsed = sitrep_text.parse(source, source=name)
        with db.session_scope(request.app.state.engine) as session:
            result = sitreps.import_parsed(session, parsed, actor=request.state.admin.username, approve=approve,
                                           two_person=request.app.state.settings.two_person_rule)
            sitrep_id, created = result.sitrep.id, result.created
    except InputError as exc:
        return page(request, "admin/sitrep_new.html", status_code=400, text=source, error=str(exc))
    flash(request, f"Imported SITREP {sitrep_id}{' and approved it' if approve else ''}." if created
          else f"This SITREP was imported before, as {sitrep_id}; nothing changed.", "ok" if created else "error")
    return _back(f"/admin/sitreps/{sitrep_id}")


@router.get("/sitreps/{sitrep_id}", dependencies=[requires(P.read)])
def sitrep_detail(sitrep_id: Id, request: Request, session: Session = Depends(db_session)):
    from dispatch import revisions

    sitrep = sitreps.get(session, sitrep_id)
    data = sitreps.as_dict(sitrep, full=True)
    return page(request, "admin/sitrep.html", sitrep=data, all_regions=taxonomy.all_regions(session),
                deliveries=ledger.log(session, sitrep_id=sitrep_id, limit=20),
                released=sitrep.status == SitrepStatus.approved and sitreps.embargoed_until(sitrep) is None,
                retracted=sitreps.retraction(session, sitrep_id) is not None,
                revisions=[{**revisions.as_dict(r, current=sitrep), "content": r.content}
                           for r in revisions.revisions(session, sitrep_id)],
                source_text=sitrep.source_text)


@router.post("/sitreps/{sitrep_id}/edit", dependencies=[requires(P.edit), Depends(require_csrf)])
def sitrep_edit(sitrep_id: Id, request: Request, form: FormData = Depends(submitted_form)):
    by = request.state.admin.username
    try:
        event_date = date.fromisoformat(str(form.get("event_date", "")))
    except ValueError:
        raise InputError(f"{form.get('event_date')!r} is not a date as YYYY-MM-DD") from None
    with db.session_scope(request.app.state.engine) as session:
        sitrep = sitreps.edit_sitrep(session, sitrep_id, by=by, title=str(form.get("title", "")),
                                     event_date=event_date,
                                     summary=str(form.get("bullets", "")).splitlines(),
                                     quotes=[str(form.get(f"quote_{c.position}", c.text))
                                             for c in sitreps.get(session, sitrep_id).commentary])
        wanted = [str(v) for v in form.getlist("region")]
        if wanted != sitreps.region_slugs(sitrep):
            sitreps.tag_sitrep(session, sitrep_id, wanted, by=by)
    flash(request, "Saved.")
    return _back(f"/admin/sitreps/{sitrep_id}")


@router.post("/sitreps/{sitrep_id}/approve", **form_post(P.approve))
def sitrep_approve(sitrep_id: Id, request: Request, release_at: str = Form(""),
                   send_flash: bool = Form(False, alias="flash"),  # flash(): the page's message
                   session: Session = Depends(db_session)):
    when = fields.parse_instant(release_at, field="release at") if release_at.strip() else None
    sitreps.approve_sitrep(session, sitrep_id, by=request.state.admin.username, release_at=when,
                           two_person=request.app.state.settings.two_person_rule, flash=send_flash)
    said = (f"SITREP {sitrep_id} is approved, scheduled for {when:%Y-%m-%d %H:%M} UTC: nothing is sent "
            "before then." if when else f"SITREP {sitrep_id} is approved: the next planning run sends it out.")
    if send_flash:
        said = (f"SITREP {sitrep_id} is approved as a FLASH: it goes to every matching reader "
                + (f"at its release, {when:%Y-%m-%d %H:%M} UTC." if when else "at once."))
    flash(request, said)
    return _back(f"/admin/sitreps/{sitrep_id}")


@router.post("/sitreps/{sitrep_id}/release", **form_post(P.approve))
def sitrep_release(sitrep_id: Id, request: Request, cancel: str = Form(""), session: Session = Depends(db_session)):
    if cancel:
        sitreps.cancel_release(session, sitrep_id, by=request.state.admin.username)
        flash(request, f"The release of SITREP {sitrep_id} is cancelled; it is a draft again.")
    else:
        sitreps.release_sitrep(session, sitrep_id, by=request.state.admin.username)
        flash(request, f"SITREP {sitrep_id} is released now.")
    return _back(f"/admin/sitreps/{sitrep_id}")


@router.post("/sitreps/{sitrep_id}/withdraw", **form_post(P.approve))
def sitrep_withdraw(sitrep_id: Id, request: Request, reason: str = Form(""), retract: str = Form(""),
                    session: Session = Depends(db_session)):
    if retract:  # a retraction: withdrawn, and everyone who received it is told
        from dispatch import revisions

        done = revisions.retract(session, sitrep_id, by=request.state.admin.username, reason=reason)
        flash(request, f"SITREP {sitrep_id} is retracted: {done.notices} earlier reader(s) will be told.")
        return _back(f"/admin/sitreps/{sitrep_id}")
    sitreps.withdraw_sitrep(session, sitrep_id, by=request.state.admin.username, reason=reason)
    flash(request, f"SITREP {sitrep_id} is withdrawn: deliveries not yet sent leave it out.")
    return _back(f"/admin/sitreps/{sitrep_id}")


@router.get("/sitreps/{sitrep_id}/preview", dependencies=[requires(P.read)])
def sitrep_preview(sitrep_id: Id, request: Request, session: Session = Depends(db_session)):
    sitrep = sitreps.get(session, sitrep_id)
    # A draft has no approval time yet: preview it as if approved now.
    view = dataclasses.replace(views.sitrep_view(sitrep, views.region_names(session)),
                               approved_at=sitrep.approved_at or utcnow())
    reader = digest.Recipient(id=0, kind="email", address="preview@example.org", name="Preview")
    built = digest.build_digest(reader, "preview", [view])
    composer = request.app.state.composer
    return page(request, "admin/preview.html", title=f"SITREP {sitrep_id}: {sitrep.title}",
                email=composer.email(built), slack=_slack_preview(composer.slack(built)),
                reason="", back=f"/admin/sitreps/{sitrep_id}")


# --- subscribers and Slack channels ------------------------------------------------

@router.get("/subscribers", dependencies=[requires(P.read)])
def subscriber_list(request: Request, q: str = "", status: str = "", kind: str = "", region: str = "",
                    after: str = "", before: str = "", session: Session = Depends(db_session)):
    found = subscribers.subscriber_page(
        session, search=q or None, region=region or None, limit=PAGE_ROWS, **_cursors(after, before),
        status=_chosen(SubscriberStatus, status), kind=_chosen(SubscriberKind, kind))
    return page(request, "admin/subscribers.html", rows=found.items, pager=pager_links(request, found), q=q, status=status, kind=kind, region=region,
                statuses=[s.value for s in SubscriberStatus], kinds=[k.value for k in SubscriberKind],
                all_regions=taxonomy.all_regions(session))


@router.get("/subscribers/new", dependencies=[requires(P.subscribers)])
def subscriber_new(request: Request, kind: str = "email", session: Session = Depends(db_session)):
    return page(request, "admin/subscriber.html", subscriber=None, kind=kind if kind == "slack" else "email",
                address="", values=forms.values_of(None), error=None, **forms.choices(session))


@router.post("/subscribers/new", dependencies=[requires(P.subscribers), Depends(require_csrf)])
def subscriber_add(request: Request, form: FormData = Depends(submitted_form)):
    kind = SubscriberKind.slack if form.get("kind") == "slack" else SubscriberKind.email
    address = str(form.get("address", ""))
    try:
        with db.session_scope(request.app.state.engine) as session:
            added = subscribers.add_subscriber(session, address, kind=kind, prefs=forms.preferences_from(form),
                                               webhook_hosts=request.app.state.settings.slack_webhook_hosts,
                                               private_networks=request.app.state.settings.outbound_private_networks)
            added_id = added.id
    except InputError as exc:
        with db.session_scope(request.app.state.engine) as session:
            return page(request, "admin/subscriber.html", status_code=400, subscriber=None, kind=kind.value,
                        address=address, values=forms.values_from(form), error=str(exc), **forms.choices(session))
    flash(request, f"Added {address.strip()}.")
    return _back(f"/admin/subscribers/{added_id}")


@router.get("/subscribers/export.csv", dependencies=[requires(P.read)])
def subscriber_export(request: Request):
    # Streamed from its own read-only snapshot (not the request's session,
    # which closes before a streamed body is sent): constant memory at any size.
    chunks = csv_export.text_chunks(csv_export.rows(request.app.state.engine))
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="subscribers.csv"'})


@router.get("/subscribers/import", dependencies=[requires(P.subscribers)])
def subscriber_import_form(request: Request):
    return page(request, "admin/subscriber_import.html", report=None, error=None)


@router.post("/subscribers/import", dependencies=[requires(P.subscribers), Depends(require_csrf)])
def subscriber_import(request: Request, file: UploadFile | None = File(None), text: str = Form("")):
    file_name = "(pasted text)"
    if file is not None and file.filename:
        file_name = file.filename
        if file.size is not None and file.size > uploads.CSV_MAX_BYTES:
            raise HTTPException(413, f"The CSV file is larger than {uploads.CSV_MAX_BYTES // 1024} KB.")
        # One byte past the limit is enough to refuse it (csv_import says so, naming the limit).
        data = file.file.read(uploads.CSV_MAX_BYTES + 1)
    else:
        data = uploads.read_text(None, text, limit=uploads.CSV_MAX_BYTES, what="CSV").encode("utf-8")
    engine, settings = request.app.state.engine, request.app.state.settings
    hosts = {"webhook_hosts": settings.slack_webhook_hosts, "private_networks": settings.outbound_private_networks}
    if len(data) > import_jobs.INLINE_MAX_BYTES:
        # Longer than a request should take: a job in the background, and its page.
        job_id = import_jobs.start(engine, data, started_by=request.state.admin.username,
                                   limit=uploads.CSV_MAX_BYTES, **hosts, file_name=file_name)
        return RedirectResponse(f"/admin/subscribers/import/{job_id}", status_code=303)
    try:
        report = csv_import.import_csv(engine, io.BytesIO(data), limit=uploads.CSV_MAX_BYTES, **hosts,
                                       file_name=file_name)
    except InputError as exc:
        return page(request, "admin/subscriber_import.html", status_code=400, report=None, error=str(exc))
    return page(request, "admin/subscriber_import.html", report=import_jobs.as_report(report), error=None)


IMPORT_REFRESH_SECONDS = 2


@router.get("/subscribers/import/{job_id}", dependencies=[requires(P.subscribers)])
def subscriber_import_job(job_id: Id, request: Request):
    """A background import's progress, refreshing itself (a meta refresh:
    the pages run no scripts), then its report."""
    job = import_jobs.get(request.app.state.engine, job_id)
    if job is None:
        raise HTTPException(404, f"There is no import {job_id}.")
    stalled = import_jobs.stalled(job)
    running = job.state == "running" and not stalled
    return page(request, "admin/subscriber_import_job.html", job=job, stalled=stalled,
                refresh=IMPORT_REFRESH_SECONDS if running else None,
                report=job.report if job.state == "done" else None)


@router.get("/subscribers/{subscriber_id}", dependencies=[requires(P.read)])
def subscriber_detail(subscriber_id: Id, request: Request, after: str = "", before: str = "",
                      session: Session = Depends(db_session)):
    subscriber = subscribers.get(session, subscriber_id)
    found = ledger.log_page(session, subscriber_id=subscriber_id, limit=SUBSCRIBER_LOG_ROWS, **_cursors(after, before))
    return page(request, "admin/subscriber.html", subscriber=subscriber, kind=subscriber.kind.value,
                address=subscriber.address, values=forms.values_of(subscriber), error=None,
                statuses=[s.value for s in SubscriberStatus],
                deliveries=found.items, pager=pager_links(request, found),
                events=events.for_subscriber(session, subscriber_id, limit=SUBSCRIBER_EVENT_ROWS),
                **forms.choices(session))


@router.post("/subscribers/{subscriber_id}", dependencies=[requires(P.subscribers), Depends(require_csrf)])
def subscriber_edit(subscriber_id: Id, request: Request, form: FormData = Depends(submitted_form)):
    status = str(form.get("status", ""))
    with db.session_scope(request.app.state.engine) as session:
        subscribers.edit_subscriber(
            session, subscriber_id, forms.preferences_from(form),
            status=_chosen(SubscriberStatus, status))
    flash(request, "Saved.")
    return _back(f"/admin/subscribers/{subscriber_id}")


@router.post("/subscribers/{subscriber_id}/remove", **form_post(P.subscribers))
def subscriber_remove(subscriber_id: Id, request: Request, session: Session = Depends(db_session)):
    removed = subscribers.remove_subscriber(session, subscriber_id)
    flash(request, f"Removed {removed.address} and its delivery log.")
    return _back("/admin/subscribers")


@router.get("/subscribers/{subscriber_id}/preview", dependencies=[requires(P.read)])
def subscriber_preview(subscriber_id: Id, request: Request, session: Session = Depends(db_session)):
    subscriber = subscribers.get(session, subscriber_id)
    result = compose.preview(session, subscriber_id, now=utcnow(), status=subscriber.status)
    emails, slack = [], []
    composer = request.app.state.composer
    for built in result.digests:  # an immediate reader: one per SITREP, each on its own
        if subscriber.kind == SubscriberKind.slack:
            slack.extend(_slack_preview(composer.slack(built)))
        else:
            emails.append(composer.email(built))
    when = result.window_end.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = (f"Next for {subscriber.address}: as soon as a matching SITREP is approved"
             if subscriber.cadence == Cadence.immediate else f"Next for {subscriber.address}: window ending {when}")
    return page(request, "admin/preview.html", title=title, emails=emails, slack=slack, reason=result.reason,
                back=f"/admin/subscribers/{subscriber_id}")


# --- deliveries ------------------------------------------------------------------------

@router.get("/deliveries", dependencies=[requires(P.read)])
def delivery_list(request: Request, status: str = "", subscriber: str = "", sitrep: str = "", day: str = "",
                  after: str = "", before: str = "", session: Session = Depends(db_session)):
    since = until = None
    if day.strip():
        since, until = fields.day_bounds(fields.parse_day(day, field="day"))
    subscriber_id = subscribers.get(session, subscriber).id if subscriber.strip() else None
    sitrep_id = fields.parse_id(sitrep, field="sitrep") if sitrep.strip() else None
    found = ledger.log_page(session, status=_chosen(DeliveryStatus, status),
                            subscriber_id=subscriber_id, sitrep_id=sitrep_id,
                            since=since, until=until, limit=PAGE_ROWS, **_cursors(after, before))
    return page(request, "admin/deliveries.html", rows=found.items, pager=pager_links(request, found), status=status, subscriber=subscriber, sitrep=sitrep,
                day=day, statuses=[s.value for s in DeliveryStatus])


@router.get("/deliveries/{delivery_id}", dependencies=[requires(P.read)])
def delivery_detail(delivery_id: Id, request: Request, session: Session = Depends(db_session)):
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise HTTPException(404, f"There is no delivery {delivery_id}.")
    return page(request, "admin/delivery.html", delivery=delivery,
                subscriber=session.get(Subscriber, delivery.subscriber_id),
                titles={s.id: s.title for s in session.exec(
                    select(Sitrep).where(col(Sitrep.id).in_(delivery.sitrep_ids))).all()},
                attempts=ledger.attempts(session, delivery_id), events=events.for_delivery(session, delivery_id))


@router.post("/deliveries/{delivery_id}/retry", **form_post(P.approve))
def delivery_retry(delivery_id: Id, request: Request, session: Session = Depends(db_session)):
    if not ledger.retry_failed(session, now=utcnow(), delivery_id=delivery_id):
        raise WorkflowError(f"delivery {delivery_id} has not failed, so there is nothing to retry")
    flash(request, f"Delivery {delivery_id} goes back to the queue; the next sending run tries it again.")
    return _back(f"/admin/deliveries/{delivery_id}")


@router.get("/audit", dependencies=[requires(P.read)])
def audit_list(request: Request, actor: str = "", target: str = "", after: str = "", before: str = "",
               session: Session = Depends(db_session)):
    found = audit.audit_page(session, actor=fields.check_text("actor", actor, max_length=200) or None,
                             target=fields.check_text("target", target, max_length=100) or None,
                             limit=PAGE_ROWS, **_cursors(after, before))
    return page(request, "admin/audit.html", rows=[audit.as_dict(e) for e in found.items],
                pager=pager_links(request, found), actor=actor, target=target)


PAGE_ROWS = 50  # rows of a list page
SUBSCRIBER_LOG_ROWS = 20  # deliveries on a subscriber's page
SUBSCRIBER_EVENT_ROWS = 20  # bounces and complaints on a subscriber's page (all of them: /admin/bounces)


def _cursors(after: str, before: str) -> dict:
    """The cursors of a link (``dispatch.paging``); a bad one is a 400 naming it."""
    return {"after": paging.parse_cursor(after, field="after"), "before": paging.parse_cursor(before, field="before")}


def _chosen(enum_cls, value: str):
    """A filter from a query string: the member, or None for "any" (empty or unknown)."""
    return enum_cls(value) if value in enum_cls._value2member_map_ else None


def _slack_preview(content) -> list[tuple[str, str]]:
    """Each Slack message as its notification text and its Block Kit JSON."""
    return [(m.text, json.dumps(list(m.blocks), indent=2, ensure_ascii=False)) for m in content.messages]

