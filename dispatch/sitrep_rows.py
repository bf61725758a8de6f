"""SITREPs as a list shows them (`dispatch sitrep list`), read with Core
selects on dispatch.read_tables: no SQLModel, no ORM, so that the command
starts in a fraction of a second (issue 14). The filter and the row's JSON
are the ones dispatch.sitreps uses for its own pages, defined here once."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dispatch import fields, paging, read_tables
from dispatch.enums import SitrepStatus


@dataclass(frozen=True)
class ListedSitrep:
    id: int
    title: str
    event_date: date
    status: SitrepStatus
    approved_at: datetime | None
    approved_by: str | None
    priority: int
    flash: bool
    regions: list[str]  # slugs


def listed_filter(columns, *, status: SitrepStatus | None, search: str | None) -> list:
    """The WHERE clauses of a SITREP list, over ``columns``: the models'
    ``Sitrep.__table__.c`` or read_tables.sitrep.c."""
    clauses = []
    if status is not None:
        clauses.append(columns.status == SitrepStatus(status).value)
    if search:
        # A contains-search over the text: SITREPs number in the thousands, not the
        # hundred thousands, and a page stops reading once it is full.
        pattern = fields.contains_pattern(search)
        clauses.append(sa.or_(columns.title.ilike(pattern, escape=fields.LIKE_ESCAPE),
                              columns.source_text.ilike(pattern, escape=fields.LIKE_ESCAPE)))
    return clauses


def page(connection: Connection, *, limit: int, after: int | None = None, before: int | None = None,
         status: SitrepStatus | None = None, search: str | None = None) -> paging.Page[ListedSitrep]:
    """``sitreps.sitrep_page``, newest first, each SITREP with its region slugs."""
    s = read_tables.sitrep.c
    query = sa.select(s.id, s.title, s.event_date, s.status, s.approved_at, s.approved_by, s.priority,
                       s.flash).where(
        *listed_filter(s, status=status, search=search))
    found = paging.fetch(query, s.id, lambda q: connection.execute(q).all(), row_id=lambda r: r.id,
                         limit=limit, after=after, before=before, descending=True)
    regions = defaultdict(list)
    if found.items:
        links = read_tables.sitrep_region.c
        for sitrep_id, slug in connection.execute(
                sa.select(links.sitrep_id, links.region_slug).where(links.sitrep_id.in_([r.id for r in found.items]))
                .order_by(links.sitrep_id, links.region_slug)):
            regions[sitrep_id].append(slug)
    items = [ListedSitrep(id=r.id, title=r.title, event_date=r.event_date, status=SitrepStatus(r.status),
                          approved_at=r.approved_at, approved_by=r.approved_by, priority=r.priority, flash=bool(r.flash),
                          regions=regions[r.id]) for r in found.items]
    return paging.Page(items, found.next, found.previous)


def embargoed_until(sitrep, *, now: datetime | None = None) -> datetime | None:
    """When an approved SITREP (stored or listed) is released, if that is still to come."""
    if sitrep.status == SitrepStatus.approved and sitrep.approved_at and \
            sitrep.approved_at > (now or datetime.now(timezone.utc)):
        return sitrep.approved_at
    return None


def as_dict(sitrep, regions: list[str]) -> dict:
    """A SITREP (stored or listed) as the JSON of a list shows it."""
    return {
        "id": sitrep.id,
        "title": sitrep.title,
        "event_date": sitrep.event_date.isoformat(),
        "status": sitrep.status.value,
        "regions": regions,
        "approved_at": sitrep.approved_at.isoformat() if sitrep.approved_at else None,
        "approved_by": sitrep.approved_by,
        "scheduled_for": until.isoformat() if (until := embargoed_until(sitrep)) else None,
        "flash": bool(sitrep.flash),
        "priority": sitrep.priority,
    }
