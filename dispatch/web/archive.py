"""The reader-facing archive and each delivery's web version.

``/archive`` lists approved SITREPs (newest first, paged, filtered by region
and analyst, searchable); ``/archive/<id>`` shows one with its revision
history; ``/view/<token>`` shows one delivered digest as its email showed it.

Who may see what depends on ``DISPATCH_ARCHIVE``:

- ``readers`` (default): a link from an email is enough. A SITREP link's
  token opens that SITREP only; a delivery's ``/view`` token opens that
  digest and sets a signed reader cookie (30 days) with which its reader can
  browse the whole archive. Without either, the page says how to get access.
- ``public``: open to everyone.
- ``off``: no archive (``/view`` still shows a reader their own email).

A ``/view`` link works for DISPATCH_VIEW_LINK_DAYS (90) after its email was
sent, and only while its reader is an active subscriber, as a reader's feed
and cookie do: an unsubscribed or removed reader's old links open nothing.

Admins signed in to the admin pages always see everything.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from dispatch import archive_query, digest, links, paging, sitrep_history, sitreps, views
from dispatch.errors import FieldError
from dispatch.models import Delivery, SitrepStatus, Subscriber, SubscriberStatus
from dispatch.web import security
from dispatch.web.pages import db_session, page, pager_links
from dispatch.web.security import Admin, LoginRequired

router = APIRouter(include_in_schema=False)
READER_COOKIE = "dispatch_reader"
MAX_TOKEN = 200  # no link of ours is longer; anything longer is refused unread


def _mode(request: Request) -> str:
    return request.app.state.settings.archive.value


def signed_in_admin(request: Request) -> Admin | None:
    """The admin pages' own sign-in check, as a yes or no: every role may read
    (dispatch.desk.roles), so any signed-in admin sees the whole archive."""
    try:
        return security.current_admin(request)
    except LoginRequired:
        return None


def cookie_reader(request: Request, session: Session) -> Subscriber | None:
    """The active subscriber a valid reader cookie names, or None."""
    value = request.cookies.get(READER_COOKIE, "")
    if not value or len(value) > MAX_TOKEN:
        return None
    try:
        claims = links.read_token(request.app.state.secret, value, purpose="reader")
    except links.TokenError:
        return None
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None or not claims.is_for(subscriber.address) or subscriber.status != SubscriberStatus.active:
        return None
    return subscriber


def may_browse(mode: str, *, admin: bool, reader: bool) -> bool:
    """Whether the whole archive is open to this visitor (pure)."""
    return admin or mode == "public" or (mode == "readers" and reader)


def may_open(mode: str, *, admin: bool, reader: bool, token_for_it: bool) -> bool:
    """Whether one SITREP's page is open to this visitor (pure): a token
    grants only the SITREP it names, and only while the archive is on."""
    return may_browse(mode, admin=admin, reader=reader) or (mode == "readers" and token_for_it)


def _refused(request: Request, mode: str):
    if mode == "off":
        raise HTTPException(404, "There is no web archive here.")
    return page(request, "message.html", status_code=403, title="The archive is for readers",
                text="Open it from a link in one of your briefing emails: each link opens the page it names, and "
                     "“View in browser” also lets you browse the archive for 30 days. Not a reader yet? "
                     "Subscribe, and the links in your emails will open it.",
                link=("/subscribe", "Subscribe"))


@router.get("/archive")
def archive_index(request: Request, session: Session = Depends(db_session),
                  region: Annotated[str | None, Query(max_length=1280)] = None,
                  analyst: Annotated[str | None, Query(max_length=1280)] = None,
                  q: Annotated[str | None, Query(max_length=200)] = None,
                  after: Annotated[str | None, Query(max_length=20)] = None,
                  before: Annotated[str | None, Query(max_length=20)] = None):
    mode = _mode(request)
    admin = signed_in_admin(request) is not None
    if not may_browse(mode, admin=admin, reader=cookie_reader(request, session) is not None):
        return _refused(request, mode)
    try:
        filters = archive_query.Filters.parse(region=region, analyst=analyst, search=q)
        found = archive_query.page(session, filters, after=paging.parse_cursor(after),
                                   before=paging.parse_cursor(before, field="before"))
    except FieldError as exc:
        raise HTTPException(400, str(exc))
    regions, analysts = archive_query.choices(session)
    return page(request, "archive.html", rows=found.items, pager=pager_links(request, found), region=region or "",
                analyst=analyst or "", q=q or "", regions=regions, analysts=analysts,
                feed_url=_public_feed(request, mode, region=region, analyst=analyst))


def _public_feed(request: Request, mode: str, **filters) -> str | None:
    if mode != "public":
        return None
    chosen = [(k, v) for k, v in filters.items() if v]
    return "/feeds/sitreps.atom" + ("?" + urlencode(chosen) if chosen else "")


@router.get("/archive/{sitrep_id}")
def archive_sitrep(sitrep_id: int, request: Request, session: Session = Depends(db_session),
                   t: Annotated[str | None, Query(max_length=MAX_TOKEN)] = None):
    mode = _mode(request)
    admin = signed_in_admin(request) is not None
    token_for_it = False
    if t:
        try:
            token_for_it = links.read_sitrep_token(request.app.state.secret, t) == sitrep_id
        except links.TokenError:
            token_for_it = False
    reader = not admin and not token_for_it and cookie_reader(request, session) is not None
    if not may_open(mode, admin=admin, reader=reader, token_for_it=token_for_it):
        return _refused(request, mode)
    found = archive_query.one(session, sitrep_id)
    if found is None or (not admin and (found[0].status == SitrepStatus.draft
                                        or sitreps.embargoed_until(found[0]) is not None)):
        raise HTTPException(404, "There is no such SITREP in the archive.")
    sitrep, view = found
    if sitrep.status == SitrepStatus.withdrawn and not admin:
        raise HTTPException(410, "This SITREP was withdrawn and is no longer in the archive.")
    return page(request, "archive_sitrep.html", sitrep=sitrep, view=view, status=sitrep.status.value,
                history=sitrep_history.history(session, sitrep.id), show_actors=admin,
                browse=may_browse(mode, admin=admin, reader=reader or cookie_reader(request, session) is not None))


@router.get("/view/{token}")
def view_delivery(token: str, request: Request, session: Session = Depends(db_session)):
    """One delivery's digest as its email showed it, rendered from the current approved content."""
    state = request.app.state
    try:
        claims = links.read_view_token(state.secret, token)
    except links.TokenError:
        raise HTTPException(400, "This link is not valid. Check that it was copied whole, "
                                 "or use the link in your most recent email.")
    delivery = session.get(Delivery, claims.delivery_id)
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if (delivery is None or subscriber is None or delivery.subscriber_id != subscriber.id
            or not claims.is_for(subscriber.address) or not delivery.sitrep_ids
            or subscriber.status != SubscriberStatus.active):
        raise HTTPException(404, "This email is no longer available.")
    if view_expired(delivery.sent_at or delivery.created_at, now=datetime.now(timezone.utc),
                    days=state.settings.view_link_days):
        raise HTTPException(410, f"This link has expired: an email's web version opens for "
                                 f"{state.settings.view_link_days} days after it was sent. "
                                 "Use the link in a more recent email.")
    recipient = views.load_recipient(session, subscriber.id)
    sitreps = views.approved_sitreps(session, ids=delivery.sitrep_ids)
    if not sitreps:
        raise HTTPException(410, "Every SITREP in this email has been withdrawn.")
    built = digest.build_digest(dataclasses.replace(recipient, format="html"), delivery.window_key, sitreps)
    content = state.composer.email(built, delivery_id=delivery.id)
    response = HTMLResponse(content.html)
    if _mode(request) == "readers":
        set_reader_cookie(request, response, subscriber)
    return response


def view_expired(sent: datetime, *, now: datetime, days: int) -> bool:
    """Whether a view link of an email sent at ``sent`` has run out (pure)."""
    if sent.tzinfo is None:  # SQLite hands back naive UTC
        sent = sent.replace(tzinfo=timezone.utc)
    return now - sent > timedelta(days=days)


def set_reader_cookie(request: Request, response: Response, subscriber: Subscriber) -> None:
    value = links.make_token(request.app.state.secret, subscriber_id=subscriber.id, address=subscriber.address,
                             purpose="reader")
    response.set_cookie(READER_COOKIE, value, max_age=int(links.MAX_AGE["reader"].total_seconds()),
                        httponly=True, samesite="lax",
                        secure=str(request.app.state.settings.public_url).startswith("https:"))
