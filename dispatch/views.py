"""Stored rows → the plain values that digest.py and the renderers take.

Reading happens here, in bulk, so the decisions stay pure and the renderers
never touch the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import selectinload
from sqlmodel import Session, col, select

from dispatch.digest import Quote, Recipient, SitrepView
from dispatch.models import Commentary, Region, Sitrep, SitrepStatus, Subscriber


def region_names(session: Session) -> dict[str, str]:
    return {r.slug: r.name for r in session.exec(select(Region)).all()}


def recipient(subscriber: Subscriber, names: dict[str, str]) -> Recipient:
    regions = sorted(r.slug for r in subscriber.regions)
    analysts = sorted(subscriber.analysts, key=lambda a: a.name)
    return Recipient(
        id=subscriber.id,
        kind=subscriber.kind.value,
        address=subscriber.address,
        name=subscriber.name,
        timezone=subscriber.timezone,
        send_at=subscriber.send_at,
        cadence=subscriber.cadence.value,
        weekday=subscriber.weekday,
        format=subscriber.format.value,
        regions=frozenset(regions),
        analysts=frozenset(a.slug for a in analysts),
        region_names=tuple(names.get(slug, slug) for slug in regions),
        analyst_names=tuple(a.name for a in analysts),
        created_at=subscriber.created_at,
        planned_through=subscriber.planned_through,
    )


def sitrep_view(sitrep: Sitrep, names: dict[str, str]) -> SitrepView:
    slugs = tuple(sorted(r.slug for r in sitrep.regions))
    return SitrepView(
        id=sitrep.id,
        title=sitrep.title,
        event_date=sitrep.event_date,
        approved_at=sitrep.approved_at,
        regions=slugs,
        region_names=tuple(names.get(slug, slug) for slug in slugs),
        summary=tuple(sitrep.summary),
        priority=sitrep.priority,
        revision=sitrep.updated_at.isoformat(),
        commentary=tuple(
            Quote(analyst_slug=c.analyst.slug, analyst_name=c.analyst.name,
                  analyst_title=c.analyst.title, text=c.text)
            for c in sitrep.commentary
        ),
    )


def approved_sitreps(
    session: Session,
    *,
    approved_after: datetime | None = None,
    approved_until: datetime | None = None,
    ids: Iterable[int] | None = None,
) -> list[SitrepView]:
    """Approved SITREPs with their regions and commentary, in two queries."""
    query = select(Sitrep).where(Sitrep.status == SitrepStatus.approved).options(
        selectinload(Sitrep.regions),
        selectinload(Sitrep.commentary).joinedload(Commentary.analyst),
    )
    if approved_after is not None:
        query = query.where(col(Sitrep.approved_at) > approved_after)
    if approved_until is not None:
        query = query.where(col(Sitrep.approved_at) <= approved_until)
    if ids is not None:
        query = query.where(col(Sitrep.id).in_(list(ids)))
    names = region_names(session)
    return [sitrep_view(s, names) for s in session.exec(query).all()]


def load_recipient(session: Session, subscriber_id: int) -> Recipient | None:
    subscriber = session.exec(
        select(Subscriber).where(Subscriber.id == subscriber_id).options(
            selectinload(Subscriber.regions), selectinload(Subscriber.analysts))
    ).first()
    return recipient(subscriber, region_names(session)) if subscriber else None
