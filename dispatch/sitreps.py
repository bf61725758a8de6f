"""SITREPs as stored: import, approval workflow, edits, region tags.

The workflow is draft → approved → withdrawn (a withdrawn SITREP may be
approved again, unless it was retracted: see ``refuse_if_retracted``).
Only approved SITREPs are ever delivered. Every change is
recorded as a SitrepChange row: who, when, what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import selectinload
from sqlmodel import Session, col, select

from dispatch import catalogue, fields, paging, sitrep_rows, taxonomy
from dispatch.desk import roles
from dispatch.errors import DuplicateError, FieldError, NotFoundError, WorkflowError
from dispatch.models import Commentary, RevisionKind, Sitrep, SitrepChange, SitrepRevision, SitrepStatus, utcnow
from dispatch.sitrep_text import ParsedSitrep, sitrep_fingerprint


FALLBACK_REGION = "global"


@dataclass(frozen=True)
class ImportResult:
    sitrep: Sitrep
    created: bool  # False: it was already there


def _record(session: Session, sitrep: Sitrep, *, actor: str, action: str, detail: str = "") -> None:
    session.add(SitrepChange(sitrep_id=sitrep.id, actor=actor, action=action, detail=detail))


def find_duplicate(session: Session, parsed: ParsedSitrep) -> Sitrep | None:
    return session.exec(select(Sitrep).where(Sitrep.fingerprint == parsed.fingerprint)).first()


def import_parsed(
    session: Session,
    parsed: ParsedSitrep,
    *,
    actor: str,
    approve: bool = False,
    regions: list[str] | None = None,
    two_person: bool = False,
    flash: bool = False,
) -> ImportResult:
    """Store a parsed SITREP as a draft (or approve it at once; ``flash``:
    as a FLASH, see ``approve_sitrep``).

    Regions default to the ones the text is about (an editable suggestion).
    Importing the same SITREP again returns the stored one, created=False.
    """
    existing = find_duplicate(session, parsed)
    if existing is not None:
        if approve:  # the same text again, to be sent: not if readers were told it was false
            refuse_if_retracted(session, existing, doing="approved again")
        return ImportResult(sitrep=existing, created=False)
    region_values = regions if regions is not None else catalogue.likely_regions(parsed.source_text)
    if not region_values:
        # A SITREP that names no place still reaches the all-regions readers.
        region_values = [FALLBACK_REGION]
    sitrep = Sitrep(
        title=parsed.title,
        event_date=parsed.event_date,
        summary=list(parsed.summary),
        source_text=parsed.source_text,
        fingerprint=parsed.fingerprint,
        regions=taxonomy.resolve_regions(session, region_values),
    )
    session.add(sitrep)
    session.flush()
    _replace_commentary(session, sitrep, parsed)
    _record(session, sitrep, actor=actor, action="imported",
            detail="regions: " + (", ".join(r.slug for r in sitrep.regions) or "none"))
    if approve:
        approve_sitrep(session, sitrep.id, by=actor, two_person=two_person, flash=flash)
    return ImportResult(sitrep=sitrep, created=True)


def _replace_commentary(session: Session, sitrep: Sitrep, parsed: ParsedSitrep) -> None:
    sitrep.commentary.clear()
    session.flush()
    for position, quote in enumerate(parsed.commentary):
        analyst = taxonomy.get_or_create_analyst(
            session, name=quote.analyst_name, title=quote.analyst_title
        )
        sitrep.commentary.append(
            Commentary(sitrep_id=sitrep.id, analyst_id=analyst.id, position=position, text=quote.text)
        )
    session.flush()


def get(session: Session, sitrep_id: int, *, lock: bool = False) -> Sitrep:
    """``lock``: hold the row until the transaction ends (PostgreSQL's FOR
    UPDATE; SQLite's writers are serialised already), for a change that
    decides from its status: two approvals at once must not both approve
    (each approval is fanned out anew, a FLASH to every reader)."""
    # An id no column can hold is no SITREP (not a database error).
    locking = {"with_for_update": True, "populate_existing": True} if lock else {}
    sitrep = session.get(Sitrep, sitrep_id, options=[selectinload(Sitrep.regions)], **locking) \
        if fields.is_id(sitrep_id) else None
    if sitrep is None:
        raise NotFoundError(f"no SITREP with id {sitrep_id}")
    return sitrep


def _listed(status: SitrepStatus | None, search: str | None):
    # The same filter as `dispatch sitrep list` reads with Core (dispatch.sitrep_rows).
    return select(Sitrep).options(selectinload(Sitrep.regions)).where(
        *sitrep_rows.listed_filter(Sitrep.__table__.c, status=status, search=search))


def list_sitreps(
    session: Session, *, status: SitrepStatus | None = None, search: str | None = None, limit: int = 200,
    after: int | None = None,
) -> list[Sitrep]:
    """Newest first by id (the order of import); ``after``: only ids below it."""
    query = _listed(status, search)
    if after is not None:
        query = query.where(col(Sitrep.id) < after)
    return list(session.exec(query.order_by(col(Sitrep.id).desc()).limit(limit)).all())


def sitrep_page(
    session: Session, *, limit: int, after: int | None = None, before: int | None = None,
    status: SitrepStatus | None = None, search: str | None = None,
) -> paging.Page[Sitrep]:
    """One page of ``list_sitreps``, with the cursors beside it (``dispatch.paging``)."""
    return paging.fetch(_listed(status, search), col(Sitrep.id), lambda q: session.exec(q).all(),
                        row_id=lambda s: s.id, limit=limit, after=after, before=before, descending=True)


def approve_sitrep(session: Session, sitrep_id: int, *, by: str, at: datetime | None = None,
                   two_person: bool = False, release_at: datetime | None = None, flash: bool = False) -> Sitrep:
    """``two_person``: refuse (roles.NotPermitted) an approver who imported it or edited it since its last approval.
    ``flash``: send it at once to every matching reader, whatever their cadence
    (dispatch.planner.plan_flash); with ``release_at``, at the release."""
    sitrep = get(session, sitrep_id, lock=True)
    refuse_if_retracted(session, sitrep, doing="approved again")
    if two_person:
        # Read, not sitrep.changes: that collection may have been loaded before this session's own changes.
        history = session.exec(select(SitrepChange.actor, SitrepChange.action)
                               .where(SitrepChange.sitrep_id == sitrep.id).order_by(col(SitrepChange.id))).all()
        refusal = roles.two_person_refusal([tuple(row) for row in history], approver=by)
        if refusal is not None:
            raise roles.NotPermitted(refusal)
    if sitrep.status == SitrepStatus.approved:
        waiting = session.exec(select(SitrepRevision.number).where(
            SitrepRevision.sitrep_id == sitrep.id, col(SitrepRevision.approved_at).is_(None))).first()
        hint = (f"; its correction {waiting} waits for `dispatch sitrep approve-correction {sitrep_id}`"
                if waiting is not None else "")
        raise WorkflowError(f"SITREP {sitrep_id} is already approved (by {sitrep.approved_by}){hint}")
    if not sitrep.regions:
        raise WorkflowError(
            f"SITREP {sitrep_id} has no region; tag it first (dispatch sitrep tag {sitrep_id} --region …)"
        )
    now = utcnow()
    if release_at is not None and release_at <= now:
        raise FieldError("release-at", f"{release_at.isoformat()} has passed; approve without it to release now")
    sitrep.status = SitrepStatus.approved
    # An embargo is an approval time still to come: every window and the
    # immediate fan-out take SITREPs approved up to their own instant only.
    sitrep.approved_at = release_at or at or now
    sitrep.approved_by = by
    sitrep.immediate_planned_at = None  # each approval is fanned out to immediate readers once
    sitrep.flash = flash  # each approval says afresh whether it is a FLASH
    sitrep.updated_at = now
    detail = [f"embargoed until {release_at.isoformat()}"] if release_at else []
    if flash:
        detail.insert(0, "FLASH")
    _record(session, sitrep, actor=by, action="approved", detail="; ".join(detail))
    session.flush()
    return sitrep


embargoed_until = sitrep_rows.embargoed_until  # when an approved SITREP is released, if still to come


def release_sitrep(session: Session, sitrep_id: int, *, by: str) -> Sitrep:
    """Lift an embargo early: released now."""
    sitrep = get(session, sitrep_id, lock=True)
    until = embargoed_until(sitrep)
    if until is None:
        raise WorkflowError(f"SITREP {sitrep_id} is not under embargo")
    sitrep.approved_at = sitrep.updated_at = utcnow()
    _record(session, sitrep, actor=by, action="released", detail=f"early (was {until.isoformat()})")
    session.flush()
    return sitrep


def cancel_release(session: Session, sitrep_id: int, *, by: str) -> Sitrep:
    """Call off an embargoed release: back to a draft, never sent.

    No event is emitted, on purpose: sitrep.approved waits for the release
    (events.emit), so no receiver heard of this approval and there is
    nothing to take back; and an event naming a SITREP still under embargo
    (sitrep.withdrawn, say) would tell receivers what the embargo keeps
    back. The cancellation is in the SITREP's history and the audit log."""
    sitrep = get(session, sitrep_id, lock=True)
    until = embargoed_until(sitrep)
    if until is None:
        raise WorkflowError(f"SITREP {sitrep_id} is not under embargo (withdraw it instead)")
    sitrep.status = SitrepStatus.draft
    sitrep.approved_at = sitrep.approved_by = None
    sitrep.flash = False  # a FLASH called off with its release: a draft like any other
    sitrep.updated_at = utcnow()
    _record(session, sitrep, actor=by, action="release cancelled", detail=f"was due {until.isoformat()}")
    session.flush()
    return sitrep


def withdraw_sitrep(session: Session, sitrep_id: int, *, by: str, reason: str = "",
                    action: str = "withdrawn") -> Sitrep:
    """``action``: "retracted" for a retraction (dispatch.revisions), which is a withdrawal readers hear of."""
    sitrep = get(session, sitrep_id, lock=True)
    if sitrep.status == SitrepStatus.withdrawn:
        raise WorkflowError(f"SITREP {sitrep_id} is already withdrawn")
    sitrep.status = SitrepStatus.withdrawn
    sitrep.updated_at = utcnow()
    _record(session, sitrep, actor=by, action=action, detail=reason)
    session.flush()
    return sitrep


def retraction(session: Session, sitrep_id: int) -> SitrepRevision | None:
    """The SITREP's retraction (dispatch.revisions.retract), if it had one."""
    return session.exec(select(SitrepRevision).where(SitrepRevision.sitrep_id == sitrep_id,
                                                     SitrepRevision.kind == RevisionKind.retraction)).first()


def refuse_if_retracted(session: Session, sitrep: Sitrep, *, doing: str) -> None:
    """A retraction is final. Its readers were told the SITREP is withdrawn
    because it was wrong: approving it again would send them what they were
    told to disregard, and an edit would change the text the retraction
    notices (still being sent) and the archive's history quote. What should
    go out instead is a new SITREP, with its own approval."""
    done = retraction(session, sitrep.id)
    if done is None:
        return
    raise WorkflowError(
        f"SITREP {sitrep.id} was retracted ({done.approved_at:%Y-%m-%d %H:%M} UTC, by {done.approved_by}), "
        f"so it is not {doing}: its readers were told it is withdrawn for good. Import what should go out "
        "as a new SITREP (dispatch sitrep import FILE, with a title or date of its own)")


def refuse_if_released(sitrep: Sitrep) -> datetime | None:
    """Editing and tagging stop at the release: what readers may already
    have read changes only by a correction, which a second person approves
    and every earlier reader hears of. Returns the embargo's end when the
    SITREP is approved but not yet out (an edit then sends it back to draft)."""
    if sitrep.status != SitrepStatus.approved:
        return None
    until = embargoed_until(sitrep)
    if until is None:
        raise WorkflowError(
            f"SITREP {sitrep.id} is released, so it is not edited or tagged any more: correct it "
            f"(dispatch sitrep correct {sitrep.id} --from-file F --note … [--region R]); a second person approves "
            "the correction and everyone who received it hears of it")
    return until


def _back_to_draft(session: Session, sitrep: Sitrep, *, by: str, until: datetime) -> None:
    """An edit under embargo: the approval was of other content, so it must be
    given again (the two-person rule counts the editor), at the same instant or another."""
    sitrep.status = SitrepStatus.draft
    sitrep.approved_at = sitrep.approved_by = None
    _record(session, sitrep, actor=by, action="approval withdrawn",
            detail=f"edited under embargo (was due {until.isoformat()}); approve it again to release it")


def tag_sitrep(session: Session, sitrep_id: int, regions: list[str], *, by: str) -> Sitrep:
    sitrep = get(session, sitrep_id)
    refuse_if_retracted(session, sitrep, doing="tagged")
    embargo = refuse_if_released(sitrep)
    resolved = taxonomy.resolve_regions(session, regions)
    if not resolved:
        raise WorkflowError("give at least one region")
    before = ", ".join(r.slug for r in sitrep.regions) or "none"
    sitrep.regions = resolved
    sitrep.updated_at = utcnow()
    _record(session, sitrep, actor=by, action="tagged",
            detail=f"regions: {before} → {', '.join(r.slug for r in resolved)}")
    if embargo is not None:
        _back_to_draft(session, sitrep, by=by, until=embargo)
    session.flush()
    return sitrep


def edit_sitrep(
    session: Session,
    sitrep_id: int,
    *,
    by: str,
    title: str | None = None,
    event_date: date | None = None,
    priority: int | None = None,
    summary: list[str] | None = None,
    quotes: list[str] | None = None,
    content: ParsedSitrep | None = None,
) -> Sitrep:
    """Change fields of a SITREP not yet released; the change is recorded.

    ``content`` replaces title, date, bullets and commentary from corrected
    text; ``quotes`` replaces the text of each quote, in order. A released
    SITREP is refused (``refuse_if_released``: correct it instead); one
    under embargo goes back to draft, to be approved again.
    """
    sitrep = get(session, sitrep_id)
    refuse_if_retracted(session, sitrep, doing="edited")
    embargo = refuse_if_released(sitrep)
    changed = _edit(session, sitrep, title=title, event_date=event_date, priority=priority, summary=summary,
                    quotes=quotes, content=content)
    if changed:
        _record(session, sitrep, actor=by, action="edited", detail="changed: " + ", ".join(changed))
        if embargo is not None:
            _back_to_draft(session, sitrep, by=by, until=embargo)
        session.flush()
    return sitrep


def apply_correction(session: Session, sitrep_id: int, content: ParsedSitrep, *, by: str, detail: str,
                     regions: list | None = None) -> Sitrep:
    """A correction's content (and ``regions``, if it re-tags it) becomes the
    SITREP's (dispatch.revisions, once approved): it stays approved, and what
    is sent from now on is this."""
    sitrep = get(session, sitrep_id)
    _edit(session, sitrep, content=content)
    if regions:
        sitrep.regions = regions
        # A re-tag alone is a new revision too: the sender keeps SITREP views
        # and rendered bodies by revision (updated_at).
        sitrep.updated_at = utcnow()
    _record(session, sitrep, actor=by, action="corrected", detail=detail)
    session.flush()
    return sitrep


def _edit(session: Session, sitrep: Sitrep, *, title: str | None = None, event_date: date | None = None,
          priority: int | None = None, summary: list[str] | None = None, quotes: list[str] | None = None,
          content: ParsedSitrep | None = None) -> list[str]:
    """Apply the changes given; returns what changed (nothing recorded)."""
    sitrep_id = sitrep.id
    changed: list[str] = []
    if content is not None:
        title, event_date, summary = content.title, content.event_date, list(content.summary)
        sitrep.source_text = content.source_text
        _replace_commentary(session, sitrep, content)
        changed.append("commentary")
    if title is not None and title.strip() and title.strip() != sitrep.title:
        sitrep.title = title.strip()
        changed.append("title")
    if event_date is not None and event_date != sitrep.event_date:
        sitrep.event_date = event_date
        changed.append("date")
    if priority is not None and priority != sitrep.priority:
        sitrep.priority = priority
        changed.append("priority")
    if summary is not None:
        cleaned = [line.strip() for line in summary if line.strip()]
        if not cleaned:
            raise WorkflowError("a SITREP needs at least one 'What has Happened' bullet")
        if cleaned != sitrep.summary:
            sitrep.summary = cleaned
            changed.append("bullets")
    if quotes is not None:
        if len(quotes) != len(sitrep.commentary):
            raise WorkflowError(f"SITREP {sitrep_id} has {len(sitrep.commentary)} quote(s), not {len(quotes)}")
        if any(not text.strip() for text in quotes):
            raise WorkflowError("a quote cannot be empty; edit the SITREP text to remove one")
        for item, text in zip(sitrep.commentary, quotes):
            if text.strip() != item.text:
                item.text = text.strip()
                if "commentary" not in changed:
                    changed.append("commentary")
    if not changed:
        return changed
    new_fingerprint = sitrep_fingerprint(sitrep.title, sitrep.event_date)
    if new_fingerprint != sitrep.fingerprint:
        clash = session.exec(select(Sitrep).where(Sitrep.fingerprint == new_fingerprint)).first()
        if clash is not None and clash.id != sitrep.id:
            raise DuplicateError(
                f"SITREP {clash.id} already has this title and date", existing_id=clash.id
            )
        sitrep.fingerprint = new_fingerprint
    sitrep.updated_at = utcnow()
    return changed


def region_slugs(sitrep: Sitrep) -> list[str]:
    return [region.slug for region in sitrep.regions]


def as_dict(sitrep: Sitrep, *, full: bool = False) -> dict:
    data = sitrep_rows.as_dict(sitrep, region_slugs(sitrep))
    if full:
        data["summary"] = list(sitrep.summary)
        data["commentary"] = [
            {"analyst": c.analyst.name, "analyst_slug": c.analyst.slug, "title": c.analyst.title, "text": c.text}
            for c in sitrep.commentary
        ]
        data["changes"] = [
            {"at": ch.at.isoformat(), "actor": ch.actor, "action": ch.action, "detail": ch.detail}
            for ch in sitrep.changes
        ]
    return data

