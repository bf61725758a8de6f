"""Atom feeds of approved SITREPs (feedgen writes them).

- ``/feeds/sitreps.atom`` (``region`` and ``analyst`` filters) when the
  archive is public;
- ``/feeds/reader/<token>.atom``, a reader's own feed matching their
  preferences, signed (``links.feed_token``) and shown on their preferences
  page, while the archive is on. Its entries link with tokens that open
  each SITREP's page, so a feed reader's links work in ``readers`` mode.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from feedgen.feed import FeedGenerator
from markupsafe import escape
from sqlmodel import Session

from dispatch import archive_query, links, views
from dispatch.digest import SitrepView
from dispatch.errors import FieldError
from dispatch.models import Subscriber, SubscriberStatus
from dispatch.web.pages import db_session

router = APIRouter(include_in_schema=False)
FEED_ENTRIES = 50
ATOM = "application/atom+xml; charset=utf-8"


def _site(request: Request) -> str:
    return str(request.app.state.settings.public_url).rstrip("/")


def entry_html(view: SitrepView) -> str:
    """The entry's content: the SITREP as HTML, every text escaped."""
    bullets = "".join(f"<li>{escape(b)}</li>" for b in view.summary)
    quotes = "".join(f"<blockquote><p>{escape(q.text)}</p><p>— {escape(q.analyst_name)}</p></blockquote>"
                     for q in view.commentary)
    return f"<ul>{bullets}</ul>{quotes}"


def build_feed(sitreps: list[SitrepView], *, feed_id: str, title: str, self_url: str, site: str,
               entry_url) -> bytes:
    fg = FeedGenerator()
    fg.id(feed_id)
    fg.title(title)
    fg.link(href=self_url, rel="self", type="application/atom+xml")
    fg.link(href=f"{site}/archive", rel="alternate", type="text/html")
    fg.language("en")
    newest = max((s.approved_at for s in sitreps), default=datetime(2000, 1, 1, tzinfo=timezone.utc))
    fg.updated(_aware(newest))
    for view in reversed(sitreps):  # feedgen puts the last added first
        entry = fg.add_entry()
        entry.id(f"{site}/archive/{view.id}")
        entry.title(view.title)
        entry.link(href=entry_url(view.id), rel="alternate", type="text/html")
        entry.published(_aware(view.approved_at))
        entry.updated(_aware(datetime.fromisoformat(view.revision)) if view.revision else _aware(view.approved_at))
        for name in dict.fromkeys(q.analyst_name for q in view.commentary):
            entry.author(name=name)
        if not view.commentary:
            entry.author(name=title)
        for region in view.region_names:
            entry.category(term=region)
        entry.summary(view.summary[0] if view.summary else view.title)
        entry.content(entry_html(view), type="html")
    return fg.atom_str(pretty=True)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@router.get("/feeds/sitreps.atom")
def public_feed(request: Request, session: Session = Depends(db_session),
                region: Annotated[str | None, Query(max_length=1280)] = None,
                analyst: Annotated[str | None, Query(max_length=1280)] = None):
    if request.app.state.settings.archive.value != "public":
        raise HTTPException(404, "There is no public feed here; readers find theirs on their preferences page.")
    try:
        filters = archive_query.Filters.parse(region=region, analyst=analyst)
    except FieldError as exc:
        raise HTTPException(400, str(exc))
    site = _site(request)
    body = build_feed(archive_query.latest(session, filters, limit=FEED_ENTRIES), feed_id=f"{site}/feeds/sitreps.atom",
                      title=request.app.state.brand, self_url=str(request.url), site=site,
                      entry_url=lambda i: f"{site}/archive/{i}")
    return Response(body, media_type=ATOM)


@router.get("/feeds/reader/{token}.atom")
def reader_feed(token: str, request: Request, session: Session = Depends(db_session)):
    state = request.app.state
    mode = state.settings.archive.value
    if mode == "off":
        raise HTTPException(404, "There is no web archive here, and so no feed.")
    try:
        claims = links.read_feed_token(state.secret, token)
    except links.TokenError:
        raise HTTPException(400, "This feed link is not valid. Copy it again from your preferences page.")
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None or not claims.is_for(subscriber.address) or subscriber.status != SubscriberStatus.active:
        raise HTTPException(404, "This feed belongs to a subscription that is not active.")
    recipient = views.load_recipient(session, subscriber.id)
    filters = archive_query.Filters(regions=tuple(sorted(recipient.regions)),
                                    analysts=tuple(sorted(recipient.analysts)))
    site = _site(request)
    archive = links.ArchiveLinks(site, state.secret, mode=mode)
    body = build_feed(archive_query.latest(session, filters, limit=FEED_ENTRIES),
                      feed_id=f"{site}/feeds/reader/{subscriber.id}", title=f"{state.brand}: your briefing",
                      self_url=f"{site}/feeds/reader/{token}.atom", site=site, entry_url=archive.sitrep)
    return Response(body, media_type=ATOM)


def reader_feed_path(secret: str, subscriber: Subscriber) -> str:
    return f"/feeds/reader/{links.feed_token(secret, subscriber_id=subscriber.id, address=subscriber.address)}.atom"
