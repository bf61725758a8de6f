"""The admin page "Bounces and complaints": what came back after a relay
accepted a message (dispatch.inbound.events), counted per day and listed
newest first. Behind the same admin dependency as every other admin page."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from fastapi import APIRouter, Depends, Request
from sqlmodel import Session, col, select

from dispatch.desk.roles import Permission as P
from dispatch.inbound import events
from dispatch.models import Subscriber, utcnow
from dispatch.web import access
from dispatch.web.access import requires
from dispatch.web.admin_pages import _cursors
from dispatch.web.pages import db_session, page, pager_links

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(access.principal)])

PAGE_ROWS = 50
COUNT_DAYS = 30  # the counts cover today and the 29 days before it (UTC)


@router.get("/bounces", dependencies=[requires(P.read)])
def bounce_list(request: Request, kind: str = "", after: str = "", before: str = "",
                session: Session = Depends(db_session)):
    chosen = kind if kind in events.KINDS else None  # unknown or empty: every kind, like the other filters
    found = events.page(session, limit=PAGE_ROWS, kind=chosen, **_cursors(after, before))
    wanted = {e.subscriber_id for e in found.items if e.subscriber_id is not None}
    addresses = dict(session.exec(select(Subscriber.id, Subscriber.address)
                                  .where(col(Subscriber.id).in_(wanted))).all()) if wanted else {}
    return page(request, "admin/bounces.html", rows=found.items, addresses=addresses,
                pager=pager_links(request, found), days=daily_counts(session, now=utcnow()),
                kind=chosen or "", kinds=events.KINDS)


def daily_counts(session: Session, *, now: datetime) -> list[tuple[str, dict[str, int], int]]:
    """Days with events in the last COUNT_DAYS, newest first: (day, per kind, total)."""
    today = datetime.combine(now.astimezone(timezone.utc).date(), time(0), tzinfo=timezone.utc)
    counts = events.counts_per_day(session, since=today - timedelta(days=COUNT_DAYS - 1),
                                   until=today + timedelta(days=1))
    return [(day.isoformat(), counts[day], sum(counts[day].values())) for day in sorted(counts, reverse=True)]
