"""Corrections and retractions of released SITREPs, as stored: make a
correction (pending), approve it (two-person rule), retract a SITREP; and
on approval, plan a notice for every reader who already received it.

Readers who have not received the SITREP yet need nothing: deliveries are
rendered at send time from the current content, so they get the corrected
one. Everyone a sent delivery reached gets a notice, planned in the ledger
with its own window key (``correction:<sitrep>:<revision>``) in the same
transaction as the approval: claimed, retried and logged like any delivery,
planned once however often this runs, and only for readers still active.
The decisions (diff, who is told) are in ``dispatch.desk.corrections``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from dispatch import ledger, sitreps, taxonomy
from dispatch.desk import corrections, roles
from dispatch.errors import DuplicateError, FieldError, NotFoundError, WorkflowError
from dispatch.events.emit import emit
from dispatch.models import (
    Delivery, DeliverySitrep, DeliveryStatus, RevisionKind, Sitrep, SitrepChange, SitrepRevision, SitrepStatus,
    Subscriber, SubscriberStatus, utcnow,
)
from dispatch.sitrep_text import ParsedSitrep, parse

MAX_NOTE = 2000  # characters of a correction note or retraction reason: a paragraph, not a second SITREP
FIRST_REVISION = 2  # the SITREP as released is revision 1


@dataclass(frozen=True)
class Approved:
    revision: SitrepRevision
    notices: int  # notices planned for earlier readers


def _note(text: str | None, *, field: str) -> str:
    note = " ".join((text or "").split())
    if not note:
        raise FieldError(field, "say what was corrected and why (readers are sent it)")
    if len(note) > MAX_NOTE:
        raise FieldError(field, f"{len(note):,} characters; at most {MAX_NOTE:,}")
    return note


def snapshot(sitrep: Sitrep) -> dict:
    return corrections.snapshot(
        title=sitrep.title, event_date=sitrep.event_date.isoformat(), bullets=sitrep.summary,
        quotes=[(" ".join(p for p in (c.analyst.title, c.analyst.name) if p), c.text) for c in sitrep.commentary],
        regions=sorted(sitreps.region_slugs(sitrep)))


def parsed_snapshot(parsed: ParsedSitrep, *, regions: list[str]) -> dict:
    """The content a correction brings; ``regions``: the slugs it will have."""
    return corrections.snapshot(
        title=parsed.title, event_date=parsed.event_date.isoformat(), bullets=parsed.summary,
        quotes=[(" ".join(p for p in (q.analyst_title, q.analyst_name) if p), q.text) for q in parsed.commentary],
        regions=sorted(regions))


def revisions(session: Session, sitrep_id: int) -> list[SitrepRevision]:
    return list(session.exec(select(SitrepRevision).where(SitrepRevision.sitrep_id == sitrep_id)
                             .order_by(col(SitrepRevision.number))).all())


def pending(session: Session, sitrep_id: int) -> SitrepRevision | None:
    return session.exec(select(SitrepRevision).where(
        SitrepRevision.sitrep_id == sitrep_id, col(SitrepRevision.approved_at).is_(None))).first()


def _next_number(session: Session, sitrep_id: int) -> int:
    numbers = [r.number for r in revisions(session, sitrep_id)]
    return max(numbers, default=FIRST_REVISION - 1) + 1


def _released(sitrep: Sitrep, *, doing: str) -> None:
    if sitrep.status == SitrepStatus.approved and sitreps.embargoed_until(sitrep) is not None:
        raise WorkflowError(f"SITREP {sitrep.id} is under embargo, not released: nobody has it yet, so {doing} "
                            f"is not needed; edit it (dispatch sitrep edit {sitrep.id}; it then needs approving "
                            "again) or cancel its release")
    if sitrep.status != SitrepStatus.approved:
        raise WorkflowError(f"SITREP {sitrep.id} is {sitrep.status.value}, not released: "
                            f"{doing} is for released SITREPs; edit it instead (dispatch sitrep edit {sitrep.id})")


def correct(session: Session, sitrep_id: int, parsed: ParsedSitrep, *, by: str, note: str,
            regions: list[str] | None = None) -> SitrepRevision:
    """A correction of a released SITREP, pending until someone approves it.
    ``regions`` (slugs or names) re-tag it; None keeps its regions. A second
    correction before the approval replaces the pending one."""
    note = _note(note, field="note")
    sitrep = sitreps.get(session, sitrep_id, lock=True)  # one change of its status at a time
    sitreps.refuse_if_retracted(session, sitrep, doing="corrected")
    _released(sitrep, doing="a correction")
    slugs = None
    if regions is not None:
        slugs = [r.slug for r in taxonomy.resolve_regions(session, regions)]
        if not slugs:
            raise WorkflowError("give at least one region")
    if parsed_snapshot(parsed, regions=slugs or sitreps.region_slugs(sitrep)) == snapshot(sitrep):
        raise WorkflowError(f"the corrected text is the same as SITREP {sitrep_id} as it stands: nothing to correct")
    clash = session.exec(select(Sitrep).where(Sitrep.fingerprint == parsed.fingerprint)).first()
    if clash is not None and clash.id != sitrep.id:
        raise DuplicateError(f"SITREP {clash.id} already has this title and date", existing_id=clash.id)
    revision = pending(session, sitrep_id)
    if revision is None:
        revision = SitrepRevision(sitrep_id=sitrep_id, number=_next_number(session, sitrep_id),
                                  kind=RevisionKind.correction, made_by=by)
        session.add(revision)
        action = "correction made"
    else:
        action = "correction replaced"
    revision.content, revision.note, revision.made_by, revision.made_at = parsed.source_text, note, by, utcnow()
    revision.regions = slugs
    session.add(SitrepChange(sitrep_id=sitrep_id, actor=by, action=action,
                             detail=f"revision {revision.number}, awaiting approval: {note}"))
    session.flush()
    return revision


# SitrepChange actions that author a pending correction, and those that end one (approved, dropped).
CORRECTION_AUTHORING = ("correction made", "correction replaced")
CORRECTION_ENDED = ("corrected", "correction dropped")


def correction_authors(session: Session, sitrep_id: int) -> list[str]:
    """Everyone who made or replaced the pending correction: a colleague's
    one-character replacement does not make the first author's text someone
    else's (as for SITREPs, ``roles.two_person_refusal``)."""
    history = session.exec(select(SitrepChange.actor, SitrepChange.action)
                           .where(SitrepChange.sitrep_id == sitrep_id).order_by(col(SitrepChange.id))).all()
    last_end = max((i for i, (_, action) in enumerate(history) if action in CORRECTION_ENDED), default=-1)
    return [actor for actor, action in history[last_end + 1:] if action in CORRECTION_AUTHORING]


def two_person_refusal(revision: SitrepRevision, *, approver: str, authors: list[str] = ()) -> str | None:
    who = roles.person(approver)
    if who not in {roles.person(a) for a in (revision.made_by, *authors)}:
        return None
    return (f"two-person rule: {approver} made this correction, so someone else must approve it "
            "(DISPATCH_TWO_PERSON_RULE)")


def approve_correction(session: Session, sitrep_id: int, *, by: str, two_person: bool = False,
                       now: datetime | None = None) -> Approved:
    """The pending correction becomes the SITREP's content, and every
    earlier reader is planned a notice of it."""
    sitrep = sitreps.get(session, sitrep_id, lock=True)  # one change of its status at a time
    revision = pending(session, sitrep_id)
    if revision is None:
        raise WorkflowError(f"SITREP {sitrep_id} has no correction awaiting approval "
                            f"(make one with dispatch sitrep correct {sitrep_id} --from-file F --note …)")
    if two_person and (refusal := two_person_refusal(revision, approver=by,
                                                     authors=correction_authors(session, sitrep_id))):
        raise roles.NotPermitted(refusal)
    _released(sitrep, doing="approving a correction")
    now = now or utcnow()
    parsed = parse(revision.content, source=f"revision {revision.number}")
    before = snapshot(sitrep)
    changes = corrections.diff(before, parsed_snapshot(parsed, regions=revision.regions or before["regions"]))
    detail = f"revision {revision.number} (changed: {', '.join(corrections.changed_parts(changes)) or 'nothing'}): " \
             f"{revision.note}"
    sitreps.apply_correction(session, sitrep_id, parsed, by=by, detail=detail,
                             regions=taxonomy.resolve_regions(session, revision.regions) if revision.regions else None)
    revision.before, revision.after = before, snapshot(sitrep)
    revision.approved_by, revision.approved_at = by, now
    notices = _plan_notices(session, sitrep_id, revision, now=now)
    emit(session, "sitrep.corrected", _event_data(sitrep, revision, notices))
    session.flush()
    return Approved(revision=revision, notices=notices)


def retract(session: Session, sitrep_id: int, *, by: str, reason: str, now: datetime | None = None) -> Approved:
    """Withdraw a released SITREP and tell everyone who received it. As a
    withdrawal, it takes effect at once (no second person): a retraction
    stops the spread of something wrong, and waiting would not."""
    reason = _note(reason, field="reason")
    sitrep = sitreps.get(session, sitrep_id, lock=True)  # one change of its status at a time
    done = sitreps.retraction(session, sitrep_id)
    if done is not None:
        raise WorkflowError(f"SITREP {sitrep_id} was retracted already (by {done.approved_by})")
    if sitrep.status != SitrepStatus.withdrawn:  # one withdrawn before may still be retracted: readers had it
        _released(sitrep, doing="a retraction")
    now = now or utcnow()
    dropped = pending(session, sitrep_id)
    if dropped is not None:
        session.delete(dropped)
        session.add(SitrepChange(sitrep_id=sitrep_id, actor=by, action="correction dropped",
                                 detail=f"revision {dropped.number}: the SITREP was retracted"))
        session.flush()
    before = snapshot(sitrep)
    if sitrep.status != SitrepStatus.withdrawn:
        sitreps.withdraw_sitrep(session, sitrep_id, by=by, reason=reason, action="retracted")
    else:
        session.add(SitrepChange(sitrep_id=sitrep_id, actor=by, action="retracted", detail=reason))
    revision = SitrepRevision(sitrep_id=sitrep_id, number=_next_number(session, sitrep_id),
                              kind=RevisionKind.retraction, note=reason, before=before, made_by=by, made_at=now,
                              approved_by=by, approved_at=now)
    session.add(revision)
    session.flush()
    notices = _plan_notices(session, sitrep_id, revision, now=now)
    emit(session, "sitrep.retracted", _event_data(sitrep, revision, notices))
    session.flush()
    return Approved(revision=revision, notices=notices)


# A delivery being sent has been rendered as the SITREP stood (a batch reads
# it at its start): its reader may be reading the original, so is counted;
# the notice sender waits for that send's outcome, and skips a reader it did not reach.
RECEIVING = (DeliveryStatus.sent, DeliveryStatus.sending)


def received(session: Session, sitrep_id: int) -> list[corrections.Received]:
    """Every sent (or being sent) delivery that carried the SITREP, with its
    reader's status now (read through ``delivery_sitrep``, the SITREP's range of its key)."""
    rows = session.execute(
        select(Delivery.id, Delivery.subscriber_id, Delivery.window_key, Subscriber.status)
        .join(DeliverySitrep, DeliverySitrep.delivery_id == Delivery.id)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(DeliverySitrep.sitrep_id == sitrep_id, col(Delivery.status).in_(RECEIVING))).all()
    return [corrections.Received(delivery_id=d, subscriber_id=s, window_key=k,
                                 reader_active=status == SubscriberStatus.active) for d, s, k, status in rows]


def _plan_notices(session: Session, sitrep_id: int, revision: SitrepRevision, *, now: datetime) -> int:
    readers = corrections.to_tell(received(session, sitrep_id))
    key = corrections.window_key(revision.kind.value, sitrep_id, revision.number)
    return ledger.plan_revision_notices(session, readers, window_key=key, sitrep_id=sitrep_id, now=now)


def get_revision(session: Session, sitrep_id: int, number: int) -> SitrepRevision:
    found = session.exec(select(SitrepRevision).where(SitrepRevision.sitrep_id == sitrep_id,
                                                      SitrepRevision.number == number)).first()
    if found is None:
        raise NotFoundError(f"SITREP {sitrep_id} has no revision {number}")
    return found


def changes_of(revision: SitrepRevision, *, current: Sitrep | None = None) -> list[corrections.Change]:
    """What the revision changes: from its stored snapshots once approved;
    while pending, against the SITREP as it stands (``current``)."""
    if revision.kind == RevisionKind.retraction:
        return []
    if revision.before is not None and revision.after is not None:
        return corrections.diff(revision.before, revision.after)
    if current is None:
        return []
    return corrections.diff(snapshot(current), parsed_snapshot(parse(revision.content, source="revision"),
                                                               regions=revision.regions or
                                                               sitreps.region_slugs(current)))


def _event_data(sitrep: Sitrep, revision: SitrepRevision, notices: int) -> dict:
    return {"sitrep_id": sitrep.id, "title": sitrep.title, "revision": revision.number,
            "kind": revision.kind.value, "note": revision.note, "made_by": revision.made_by,
            "approved_by": revision.approved_by, "notices": notices}


def as_dict(revision: SitrepRevision, *, current: Sitrep | None = None) -> dict:
    return {
        "sitrep_id": revision.sitrep_id, "revision": revision.number, "kind": revision.kind.value,
        "note": revision.note, "regions": revision.regions, "made_by": revision.made_by,
        "made_at": revision.made_at.isoformat(),
        "approved_by": revision.approved_by,
        "approved_at": revision.approved_at.isoformat() if revision.approved_at else None,
        "status": "approved" if revision.approved_at else "pending",
        "diff": [{"part": c.part, "sign": c.sign, "text": c.text} for c in changes_of(revision, current=current)],
    }
