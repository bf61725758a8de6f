"""A page of subscribers as the API shows them (``subscribers.as_dict``),
read with Core selects: a thousand ORM objects with their region and
analyst collections cost more than the query and the JSON together."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlmodel import Session

from dispatch import paging, subscribers
from dispatch.models import (
    Analyst,
    Subscriber,
    SubscriberAnalyst,
    SubscriberKind,
    SubscriberRegion,
    SubscriberStatus,
)

_table = Subscriber.__table__
_COLUMNS = ("id", "kind", "address", "name", "status", "status_reason", "cadence", "send_at", "timezone",
            "weekday", "format", "created_at", "confirmed_at")


def page(session: Session, *, limit: int, after: int | None = None, before: int | None = None,
         kind: SubscriberKind | None = None, status: SubscriberStatus | None = None, region: str | None = None,
         search: str | None = None) -> paging.Page[dict]:
    """``subscribers.subscriber_page`` with each subscriber as ``subscribers.as_dict`` gives it."""
    query = subscribers._listed(session, kind=kind, status=status, region=region, search=search,
                                query=sa.select(*(_table.c[name] for name in _COLUMNS)))
    rows = paging.fetch(query, _table.c.id, lambda q: session.execute(q).all(), row_id=lambda r: r.id,
                        limit=limit, after=after, before=before)
    ids = [r.id for r in rows.items]
    regions, analysts = defaultdict(list), defaultdict(list)
    if ids:
        links = SubscriberRegion.__table__.c
        for subscriber_id, slug in session.execute(sa.select(links.subscriber_id, links.region_slug).where(
                links.subscriber_id.in_(ids)).order_by(links.subscriber_id, links.region_slug)):
            regions[subscriber_id].append(slug)
        chosen, analyst = SubscriberAnalyst.__table__.c, Analyst.__table__.c
        for subscriber_id, name in session.execute(
                sa.select(chosen.subscriber_id, analyst.name).join(Analyst.__table__, analyst.id == chosen.analyst_id)
                .where(chosen.subscriber_id.in_(ids)).order_by(chosen.subscriber_id, chosen.analyst_id)):
            analysts[subscriber_id].append(name)
    items = [_as_dict(r, regions[r.id], analysts[r.id]) for r in rows.items]
    return paging.Page(items=items, next=rows.next, previous=rows.previous)


def _as_dict(row, regions: list[str], analysts: list[str]) -> dict:
    # Key for key as subscribers.as_dict (tests/test_subscriber_rows.py holds them equal).
    return {
        "id": row.id,
        "kind": _value(row.kind),
        "address": row.address,
        "name": row.name,
        "status": _value(row.status),
        "status_reason": row.status_reason,
        "regions": regions,
        "analysts": analysts,
        "cadence": _value(row.cadence),
        "at": row.send_at,
        "tz": row.timezone,
        "weekday": subscribers.WEEKDAYS[row.weekday],
        "format": _value(row.format),
        "created_at": row.created_at.isoformat(),
        "confirmed_at": row.confirmed_at.isoformat() if row.confirmed_at else None,
    }


def _value(member) -> str:
    return getattr(member, "value", member)
