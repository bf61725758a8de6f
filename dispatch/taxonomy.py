"""Regions and analysts as stored: seeding the catalogue, and turning what a
person typed ("Europe and Eurasia", "robert-walsh", "General Robert Walsh")
into rows, with an error that lists the allowed values."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, select

from dispatch import catalogue
from dispatch.errors import FieldError
from dispatch.input_bounds import bounded
from dispatch.models import Analyst, Region
from dispatch.sitrep_text import slugify, split_attribution

# What a region's or an analyst's name and slug hold (models.Region,
# models.Analyst): a longer value names nothing, and is refused before it is
# parsed (dispatch/input_bounds.py).
MAX_NAME_CHARS = 200


def seed_regions(session: Session) -> int:
    """Insert the catalogue's regions that are missing; never rename or delete
    (an admin may have edited names). Returns how many were added."""
    existing = set(session.exec(select(Region.slug)).all())
    added = 0
    for entry in catalogue.regions():
        if entry.slug not in existing:
            session.add(Region(slug=entry.slug, name=entry.name))
            added += 1
    session.flush()
    return added


def all_regions(session: Session) -> list[Region]:
    return list(session.exec(select(Region).order_by(Region.slug)).all())


def resolve_regions(session: Session, values: Iterable[str], *, field: str = "region") -> list[Region]:
    """Each value is a region slug or name (any case). Unknown ones are an error."""
    known = all_regions(session)
    by_key = {r.slug.casefold(): r for r in known} | {r.name.casefold(): r for r in known}
    resolved: list[Region] = []
    unknown: list[str] = []
    for value in values:
        value = bounded(value.strip(), field=field, limit=MAX_NAME_CHARS)
        if not value:
            continue
        region = by_key.get(value.casefold()) or by_key.get(slugify(value))
        if region is None:
            unknown.append(value)
        elif region not in resolved:
            resolved.append(region)
    if unknown:
        allowed = ", ".join(r.slug for r in known)
        raise FieldError(field, f"unknown region {', '.join(map(repr, unknown))}; allowed: {allowed}")
    return resolved


def find_analyst(session: Session, value: str) -> Analyst | None:
    """By slug, by name, or by name with a rank ("General Robert Walsh")."""
    value = value.strip()
    if len(value) > MAX_NAME_CHARS:
        return None
    name, _title = split_attribution(value)
    for slug in dict.fromkeys((value.casefold(), slugify(value), slugify(name))):
        analyst = session.exec(select(Analyst).where(Analyst.slug == slug)).first()
        if analyst is not None:
            return analyst
    return None


def resolve_analysts(session: Session, values: Iterable[str], *, field: str = "analyst") -> list[Analyst]:
    resolved: list[Analyst] = []
    unknown: list[str] = []
    for value in values:
        if not bounded(value.strip(), field=field, limit=MAX_NAME_CHARS):
            continue
        analyst = find_analyst(session, value)
        if analyst is None:
            unknown.append(value.strip())
        elif analyst not in resolved:
            resolved.append(analyst)
    if unknown:
        names = [a.name for a in session.exec(select(Analyst).order_by(Analyst.name)).all()]
        allowed = ", ".join(names) if names else "none yet (analysts come from imported SITREPs)"
        raise FieldError(field, f"unknown analyst {', '.join(map(repr, unknown))}; known: {allowed}")
    return resolved


def get_or_create_analyst(session: Session, *, name: str, title: str | None) -> Analyst:
    slug = slugify(name)
    analyst = session.exec(select(Analyst).where(Analyst.slug == slug)).first()
    if analyst is None:
        analyst = Analyst(name=name, title=title, slug=slug)
        session.add(analyst)
        session.flush()
    elif title and not analyst.title:
        analyst.title = title
    return analyst
