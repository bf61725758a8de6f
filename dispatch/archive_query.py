"""What the reader-facing archive and feeds read: approved SITREPs, newest
first, filtered by region, analyst and a text search, a page at a time.
Reads only; the web faces (dispatch/web/archive.py, feeds.py) call it."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import selectinload
from sqlmodel import Session, col, select

from dispatch import fields, paging, views
from dispatch.digest import SitrepView
from dispatch.errors import FieldError
from dispatch.models import Analyst, Commentary, Region, Sitrep, SitrepRegion, SitrepStatus, utcnow

MAX_FILTER = 64  # a region slug's length; analyst slugs longer than this are refused as filters
PAGE_SIZE = 25


@dataclass(frozen=True)
class Filters:
    regions: tuple[str, ...] = ()  # slugs, OR-ed; empty: all
    analysts: tuple[str, ...] = ()  # slugs, OR-ed; empty: all
    search: str = ""

    @classmethod
    def parse(cls, *, region: str | None = None, analyst: str | None = None, search: str | None = None) -> Filters:
        """From a query string; each refusal names its field."""
        return cls(regions=_slugs(region, "region"), analysts=_slugs(analyst, "analyst"),
                   search=(search or "").strip())


def _slugs(value: str | None, field: str) -> tuple[str, ...]:
    if not value or not value.strip():
        return ()
    if len(value) > 20 * MAX_FILTER:
        raise FieldError(field, "is too long")
    found = tuple(s.strip() for s in value.split(",") if s.strip())
    for slug in found:
        if len(slug) > MAX_FILTER or not all(ch.isalnum() or ch in "-_." for ch in slug):
            raise FieldError(field, f"{slug[:40]!r} is not a {field} (letters, digits and dashes)")
    return found[:20]


def _query(filters: Filters):
    # An embargoed SITREP (approved for a later instant) is not out yet.
    query = select(Sitrep).where(Sitrep.status == SitrepStatus.approved, col(Sitrep.approved_at) <= utcnow()).options(
        selectinload(Sitrep.regions), selectinload(Sitrep.commentary).joinedload(Commentary.analyst))
    if filters.regions:
        query = query.where(col(Sitrep.id).in_(select(SitrepRegion.sitrep_id).where(
            col(SitrepRegion.region_slug).in_(filters.regions))))
    if filters.analysts:
        query = query.where(col(Sitrep.id).in_(select(Commentary.sitrep_id).join(
            Analyst, col(Analyst.id) == col(Commentary.analyst_id)).where(col(Analyst.slug).in_(filters.analysts))))
    if filters.search:
        pattern = fields.contains_pattern(filters.search, field="q")
        query = query.where(sa.or_(col(Sitrep.title).ilike(pattern, escape=fields.LIKE_ESCAPE),
                                   col(Sitrep.source_text).ilike(pattern, escape=fields.LIKE_ESCAPE)))
    return query


def page(session: Session, filters: Filters, *, limit: int = PAGE_SIZE, after: int | None = None,
         before: int | None = None) -> paging.Page[SitrepView]:
    """One page of approved SITREPs, newest (highest id) first."""
    found = paging.fetch(_query(filters), col(Sitrep.id), lambda q: session.exec(q).all(), row_id=lambda s: s.id,
                         limit=limit, after=after, before=before, descending=True)
    names = views.region_names(session)
    return paging.Page(items=[views.sitrep_view(s, names) for s in found.items], next=found.next,
                       previous=found.previous)


def latest(session: Session, filters: Filters, *, limit: int) -> list[SitrepView]:
    """The newest approved SITREPs matching the filters (for feeds), newest approval first."""
    rows = session.exec(_query(filters).order_by(col(Sitrep.approved_at).desc(), col(Sitrep.id).desc())
                        .limit(limit)).all()
    names = views.region_names(session)
    return [views.sitrep_view(s, names) for s in rows]


def one(session: Session, sitrep_id: int) -> tuple[Sitrep, SitrepView] | None:
    """Any SITREP by id (the caller decides who may see which status)."""
    if not fields.is_id(sitrep_id):
        return None
    sitrep = session.exec(select(Sitrep).where(Sitrep.id == sitrep_id).options(
        selectinload(Sitrep.regions), selectinload(Sitrep.commentary).joinedload(Commentary.analyst))).first()
    if sitrep is None:
        return None
    view = views.sitrep_view(sitrep, views.region_names(session)) if sitrep.approved_at else None
    return sitrep, view


def choices(session: Session) -> tuple[list[Region], list[Analyst]]:
    return (list(session.exec(select(Region).order_by(col(Region.name))).all()),
            list(session.exec(select(Analyst).order_by(col(Analyst.name))).all()))
