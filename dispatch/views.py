"""Stored rows → the plain values that digest.py and the renderers take.

Reading happens here, in bulk, so the decisions stay pure and the renderers
never touch the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.orm import selectinload
from sqlmodel import Session, col, select

from dispatch.digest import Quote, Recipient, SitrepView
from dispatch.models import (
    Analyst,
    Commentary,
    Region,
    Sitrep,
    SitrepStatus,
    Subscriber,
    SubscriberAnalyst,
    SubscriberRegion,
    SubscriberStatus,
)


def region_names(session: Session) -> dict[str, str]:
    """Every region's name by slug: two plain columns, no ORM objects (it runs for every batch sent)."""
    return dict(session.connection().execute(_REGION_NAMES).all())


_REGION_NAMES = sa.select(Region.__table__.c.slug, Region.__table__.c.name)


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


def preference_sets(session: Session, condition) -> tuple[dict[int, list[str]], dict[int, list[tuple[str, str]]]]:
    """Region slugs, and (slug, name) of followed analysts, for the subscribers
    whose id meets ``condition`` (a clause on a subscriber-id column), in two
    plain queries; both lists sorted (regions by slug, analysts by name)."""
    return _preferences(session.connection(), *_preference_selects(condition))


def _preference_selects(condition) -> tuple:
    return (select(SubscriberRegion.subscriber_id, SubscriberRegion.region_slug)
            .where(condition(col(SubscriberRegion.subscriber_id))).order_by(col(SubscriberRegion.region_slug)),
            select(SubscriberAnalyst.subscriber_id, Analyst.slug, Analyst.name)
            .join(Analyst, col(Analyst.id) == col(SubscriberAnalyst.analyst_id))
            .where(condition(col(SubscriberAnalyst.subscriber_id))).order_by(col(Analyst.name)))


def _preferences(connection, regions_select, analysts_select, parameters: dict | None = None) -> tuple[dict, dict]:
    # Plain columns: Core rows, without the ORM's loading.
    regions: dict[int, list[str]] = {}
    for subscriber_id, slug in connection.execute(regions_select, parameters).all():
        regions.setdefault(subscriber_id, []).append(slug)
    analysts: dict[int, list[tuple[str, str]]] = {}
    for subscriber_id, slug, name in connection.execute(analysts_select, parameters).all():
        analysts.setdefault(subscriber_id, []).append((slug, name))
    return regions, analysts


_subscriber = Subscriber.__table__
# The enumerations read as the strings stored (their values): a Recipient
# holds those, and the Enum type's conversion to members and back costs more
# than the rest of the row. The status is made a member by a dict lookup.
_RECIPIENT_COLUMNS = (_subscriber.c.id, *(sa.type_coerce(_subscriber.c[name], sa.String).label(name) for name in (
    "status", "kind")), _subscriber.c.address, _subscriber.c.name, _subscriber.c.timezone, _subscriber.c.send_at,
    sa.type_coerce(_subscriber.c.cadence, sa.String).label("cadence"), _subscriber.c.weekday,
    sa.type_coerce(_subscriber.c.format, sa.String).label("format"), _subscriber.c.created_at,
    _subscriber.c.planned_through)
_STATUSES = {status.value: status for status in SubscriberStatus}


def _listed(dialect: str):
    """The ids of the parameter ``ids`` (one JSON array) as a subquery. An
    ``IN`` of a batch's 200 ids bound one by one is rendered and bound afresh
    for every query, and its SQL changes with the count, so SQLite prepares
    it again each time."""
    ids = sa.bindparam("ids", type_=sa.JSON)
    if dialect == "postgresql":
        values = sa.func.json_array_elements_text(ids).table_valued("value")
        return sa.select(sa.cast(values.c.value, sa.Integer)).scalar_subquery()
    values = sa.func.json_each(ids).table_valued("value")
    return sa.select(values.c.value).scalar_subquery()


@lru_cache(maxsize=4)
def _reader_selects(dialect: str) -> tuple:
    """The readers' three queries, built once: a batch runs them with its ids."""
    listed = _listed(dialect)
    return (select(*_RECIPIENT_COLUMNS).where(_subscriber.c.id.in_(listed)),
            *_preference_selects(lambda column: column.in_(listed)))


def readers(session: Session, ids: Iterable[int]) -> dict[int, tuple[SubscriberStatus, Recipient]]:
    """Each subscriber's status and Recipient (the same values as
    ``recipient`` gives), by id, in plain queries: sending reads every reader,
    and ORM objects with their relationships cost several times more."""
    recipients, *preferences = _reader_selects(session.get_bind().dialect.name)
    connection, parameters = session.connection(), {"ids": sorted(ids)}
    rows = connection.execute(recipients, parameters).all()
    regions, analysts = _preferences(connection, *preferences, parameters)
    names = region_names(session)
    found = {}
    none: list = []
    # Most readers of a batch follow what some other reader of it follows: the
    # sets and names made once per choice, and shared (digest groups hash them).
    chosen: dict[tuple, tuple] = {}
    # Rows unpacked as tuples: reading a Row's columns by name costs about a microsecond each.
    for (id_, status, kind, address, name, zone, send_at, cadence, weekday, format_, created_at,
         planned_through) in rows:
        choice = (tuple(regions.get(id_, none)), tuple(analysts.get(id_, none)))
        made = chosen.get(choice)
        if made is None:
            slugs, followed = choice
            made = chosen[choice] = (frozenset(slugs), frozenset(slug for slug, _ in followed),
                                     tuple(names.get(slug, slug) for slug in slugs),
                                     tuple(analyst for _, analyst in followed))
        followed_regions, followed_analysts, followed_region_names, followed_analyst_names = made
        found[id_] = (_STATUSES[status], Recipient(
            id=id_, kind=kind, address=address, name=name, timezone=zone, send_at=send_at,
            cadence=cadence, weekday=weekday, format=format_, created_at=created_at,
            planned_through=planned_through, regions=followed_regions, analysts=followed_analysts,
            region_names=followed_region_names, analyst_names=followed_analyst_names))
    return found


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
        flash=bool(sitrep.flash),
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


def approved_revisions(session: Session, ids: Iterable[int]) -> dict[int, datetime]:
    """The approved SITREPs among ``ids`` and the revision (``updated_at``) of each, in one small query."""
    return dict(session.exec(select(Sitrep.id, Sitrep.updated_at).where(
        Sitrep.status == SitrepStatus.approved, col(Sitrep.id).in_(list(ids)))).all())


class SitrepViews:
    """Approved SITREPs as views, kept between batches by revision: a batch
    asks only which of its SITREPs are approved and at which revision, and
    reads again only those new or edited since (every edit moves
    ``updated_at``; the rendered bodies are keyed on it the same way). At
    most ``size`` are kept."""

    def __init__(self, size: int = 256):
        self.size = size
        self._kept: dict[int, tuple[datetime, SitrepView]] = {}

    def current(self, session: Session, ids: Iterable[int]) -> dict[int, SitrepView]:
        revisions = approved_revisions(session, ids)
        kept = dict(self._kept)  # a snapshot: sender threads share this
        found = {i: kept[i][1] for i, at in revisions.items() if i in kept and kept[i][0] == at}
        missing = [i for i in revisions if i not in found]
        if missing:
            fresh = {v.id: v for v in approved_sitreps(session, ids=missing)}
            found.update(fresh)
            if len(kept) + len(fresh) > self.size:
                kept = {}
            kept.update((i, (revisions[i], v)) for i, v in fresh.items() if i in revisions)
            self._kept = kept
        return found


def load_recipient(session: Session, subscriber_id: int) -> Recipient | None:
    subscriber = session.exec(
        select(Subscriber).where(Subscriber.id == subscriber_id).options(
            selectinload(Subscriber.regions), selectinload(Subscriber.analysts))
    ).first()
    return recipient(subscriber, region_names(session)) if subscriber else None
