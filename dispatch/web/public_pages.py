"""Subscriber pages: subscribe (double opt-in), confirm, preferences and
unsubscribe. Apart from the subscribe form, every page is reached through a
signed link, and a link only ever shows the subscriber it was made for."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse
from sqlalchemy.orm import selectinload
from sqlmodel import Session, select
from starlette.datastructures import FormData

from dispatch import db, links, notices, signup, subscribers
from dispatch.desk import audit
from dispatch.errors import FieldError
from dispatch.models import Subscriber, SubscriberStatus, utcnow
from dispatch.web import forms
from dispatch.web.pages import db_session, flash, message, page
from dispatch.web.security import check_csrf, client_address, refuse_if_full, require_csrf, submitted_form

async def _as_reader() -> None:
    """What these pages change, the reader changes (their own subscription);
    async, so the audit log's actor is set in the request's own context."""
    audit.set_actor(audit.Actor("reader", "own link or sign-up"))


router = APIRouter(include_in_schema=False, dependencies=[Depends(_as_reader)])


def _by_link(request: Request, session: Session, token: str, purpose: str) -> Subscriber:
    """The subscriber a signed link names, or a clear error page."""
    try:
        claims = links.read_token(request.app.state.secret, token, purpose=purpose)
    except links.TokenError as exc:
        if exc.expired:
            raise HTTPException(410, "This link has expired. Subscribe again, or use the link in a newer email.")
        raise HTTPException(400, "This link is not valid. Check that it was copied whole, "
                                 "or use the link in your most recent email.")
    subscriber = session.exec(select(Subscriber).where(Subscriber.id == claims.subscriber_id).options(
        selectinload(Subscriber.regions), selectinload(Subscriber.analysts))).first()
    # The address tag: a link made for a removed subscriber never opens a later one with the same id.
    if subscriber is None or not claims.is_for(subscriber.address):
        raise HTTPException(404, "This link belongs to a subscription that no longer exists.")
    return subscriber


@router.get("/")
def home():
    return RedirectResponse("/subscribe", status_code=303)


@router.get("/subscribe")
def subscribe_form(request: Request, session: Session = Depends(db_session)):
    return page(request, "subscribe.html", values=forms.values_of(None), address="", error=None,
                **forms.choices(session))


@router.post("/subscribe", dependencies=[Depends(require_csrf)])
def subscribe(request: Request, form: FormData = Depends(submitted_form)):
    address = str(form.get("email", "")).strip()
    app = request.app.state
    client = client_address(request)
    # Each request may send an email: limited per client here, and per
    # address by the daily cap when the notice is planned, so the form
    # cannot be used to flood an inbox. The answer is the same either way.
    refuse_if_full((app.signup_throttle, client), what="subscribe requests")
    app.signup_throttle.record(client)
    try:
        with db.session_scope(app.engine) as session:
            result = signup.request_subscription(session, address, forms.preferences_from(form))
            subscriber_id = result.subscriber.id
    except FieldError as exc:
        with db.session_scope(app.engine) as session:
            return page(request, "subscribe.html", status_code=400, values=forms.values_from(form),
                        address=address, error=str(exc), **forms.choices(session))
    if result.next_step != signup.NextStep.nothing:
        # Planned, not sent: the notice sender mails it, so a slow relay never holds this request.
        if notices.plan(app.engine, subscriber_id, kind=result.next_step.value, now=utcnow()) is not None \
                and app.notice_worker is not None:
            app.notice_worker.wake()
    return message(request, "Check your inbox",
                   # What was typed, never what is stored: the stored spelling would tell who is subscribed.
                   f"If {address} can be subscribed, an email is on its way to it. "
                   "Open the link in it to confirm: nothing is sent to you before that.")


@router.get("/confirm/{token}")
def confirm_page(token: str, request: Request, session: Session = Depends(db_session)):
    subscriber = _by_link(request, session, token, "confirm")
    return page(request, "confirm.html", subscriber=subscriber, token=token,
                preferences_url=_link(request, subscriber, "preferences"))


@router.post("/confirm/{token}", dependencies=[Depends(require_csrf)])
def confirm(token: str, request: Request, session: Session = Depends(db_session)):
    subscriber = _by_link(request, session, token, "confirm")
    if not signup.confirm(session, subscriber) and subscriber.status != SubscriberStatus.active:
        return message(request, "This subscription is closed",
                       f"Nothing is being sent to {subscriber.address} ({subscriber.status.value}). "
                       "Please contact the publisher.", status_code=409)
    flash(request, "Your subscription is confirmed. Choose what you receive below.")
    return RedirectResponse(_link(request, subscriber, "preferences"), status_code=303)


@router.get("/preferences/{token}")
def preferences_page(token: str, request: Request, session: Session = Depends(db_session)):
    subscriber = _by_link(request, session, token, "preferences")
    return page(request, "preferences.html", subscriber=subscriber, token=token, error=None,
                values=forms.values_of(subscriber), unsubscribe_url=_link(request, subscriber, "unsubscribe"),
                feed_url=_feed_url(request, subscriber), **forms.choices(session))


@router.post("/preferences/{token}", dependencies=[Depends(require_csrf)])
def save_preferences(token: str, request: Request, form: FormData = Depends(submitted_form)):
    with db.session_scope(request.app.state.engine) as session:
        subscriber = _by_link(request, session, token, "preferences")
        try:
            subscribers.edit_subscriber(session, subscriber.id, forms.preferences_from(form))
        except FieldError as exc:
            session.rollback()
            subscriber = _by_link(request, session, token, "preferences")
            return page(request, "preferences.html", status_code=400, subscriber=subscriber, token=token,
                        error=str(exc), values=forms.values_from(form),
                        unsubscribe_url=_link(request, subscriber, "unsubscribe"),
                        feed_url=_feed_url(request, subscriber), **forms.choices(session))
    flash(request, "Your preferences are saved.")
    return RedirectResponse(f"/preferences/{token}", status_code=303)


@router.get("/unsubscribe/{token}")
def unsubscribe_page(token: str, request: Request, session: Session = Depends(db_session)):
    subscriber = _by_link(request, session, token, "unsubscribe")
    return page(request, "unsubscribe.html", subscriber=subscriber, token=token)


@router.post("/unsubscribe/{token}")
def unsubscribe(token: str, request: Request, form: FormData = Depends(submitted_form)):
    # RFC 8058: a mail provider POSTs "List-Unsubscribe=One-Click" without
    # cookies; the signed link is the authority, and it must work at once.
    one_click = form.get("List-Unsubscribe") == "One-Click"
    if not one_click:
        check_csrf(request, form)
    with db.session_scope(request.app.state.engine) as session:
        subscriber = _by_link(request, session, token, "unsubscribe")
        signup.unsubscribe(session, subscriber, how="one-click" if one_click else "unsubscribe page")
        address = subscriber.address
    if one_click:
        return PlainTextResponse(f"{address} is unsubscribed.\n")
    return page(request, "unsubscribe.html", subscriber=subscriber, token=token)


@router.post("/resubscribe/{token}", dependencies=[Depends(require_csrf)])
def resubscribe(token: str, request: Request, session: Session = Depends(db_session)):
    subscriber = _by_link(request, session, token, "unsubscribe")
    if not signup.resubscribe(session, subscriber) and subscriber.status != SubscriberStatus.active:
        return message(request, "This subscription cannot be resumed here",
                       f"Nothing is being sent to {subscriber.address} ({subscriber.status.value}). "
                       "Please contact the publisher.", status_code=409)
    flash(request, "Welcome back: you are subscribed again.")
    return RedirectResponse(_link(request, subscriber, "preferences"), status_code=303)


def _feed_url(request: Request, subscriber: Subscriber) -> str | None:
    """The reader's own Atom feed, while the archive is on and they are active."""
    if request.app.state.settings.archive.value == "off" or subscriber.status != SubscriberStatus.active:
        return None
    token = links.feed_token(request.app.state.secret, subscriber_id=subscriber.id, address=subscriber.address)
    return f"{str(request.app.state.settings.public_url).rstrip('/')}/feeds/reader/{token}.atom"


def _link(request: Request, subscriber: Subscriber, purpose: str) -> str:
    """A site-relative signed link for the subscriber."""
    return links.link_path(request.app.state.secret, subscriber_id=subscriber.id, address=subscriber.address,
                           purpose=purpose)
