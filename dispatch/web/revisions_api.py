"""The JSON API for corrections of released SITREPs (dispatch.revisions):
make one, approve it (two-person rule: 403), list a SITREP's revisions.
A retraction is ``POST /api/sitreps/{id}/withdraw?retract=true&reason=…``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from dispatch import revisions, sitrep_text, sitreps
from dispatch.desk.roles import Permission as P
from dispatch.web import access
from dispatch.web.access import requires
from dispatch.web.api import SitrepId, _actor
from dispatch.web.pages import db_session
from dispatch.web.uploads import SITREP_MAX_BYTES

router = APIRouter(prefix="/api", tags=["dispatch"], dependencies=[Depends(access.principal)])


class CorrectionIn(BaseModel):
    text: str = Field(description="The corrected SITREP, in the text format of an import",
                      max_length=SITREP_MAX_BYTES)
    note: str = Field(description="What was corrected and why: sent to everyone who received it",
                      max_length=revisions.MAX_NOTE)
    regions: list[str] | None = Field(None, description="region slugs to re-tag it with; default: as now",
                                      max_length=100)


@router.post("/sitreps/{sitrep_id}/corrections", dependencies=[requires(P.edit)], status_code=201,
             summary="Correct a released SITREP: a revision that waits for someone else's approval")
def correct(sitrep_id: SitrepId, body: CorrectionIn, actor: str = Depends(_actor),
            session: Session = Depends(db_session)) -> dict:
    parsed = sitrep_text.parse(body.text, source="request")
    revision = revisions.correct(session, sitrep_id, parsed, by=actor, note=body.note, regions=body.regions)
    return revisions.as_dict(revision, current=sitreps.get(session, sitrep_id))


@router.post("/sitreps/{sitrep_id}/corrections/approve", dependencies=[requires(P.approve)],
             summary="Approve the pending correction: it becomes the SITREP, and every earlier reader is told")
def approve_correction(sitrep_id: SitrepId, request: Request, actor: str = Depends(_actor),
                       session: Session = Depends(db_session)) -> dict:
    done = revisions.approve_correction(session, sitrep_id, by=actor,
                                        two_person=request.app.state.settings.two_person_rule)
    return {**revisions.as_dict(done.revision), "notices": done.notices}


@router.get("/sitreps/{sitrep_id}/revisions", dependencies=[requires(P.read)],
            summary="A SITREP's corrections and retraction, with what each changed")
def list_revisions(sitrep_id: SitrepId, session: Session = Depends(db_session)) -> list[dict]:
    current = sitreps.get(session, sitrep_id)
    return [revisions.as_dict(r, current=current) for r in revisions.revisions(session, sitrep_id)]
