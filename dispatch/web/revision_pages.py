"""Admin forms for corrections of released SITREPs (dispatch.revisions):
an editor corrects, someone else approves (two-person rule: 403). They sit
on the SITREP's own page; a retraction is its withdraw form, ticked."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from dispatch import db, revisions, sitrep_text, sitreps
from dispatch.desk.roles import Permission as P
from dispatch.errors import InputError
from dispatch.web import access, uploads
from dispatch.web.access import requires
from dispatch.web.admin_pages import Id, _back
from dispatch.web.pages import flash
from dispatch.web.security import require_csrf

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(access.principal)])


@router.post("/sitreps/{sitrep_id}/correct", dependencies=[requires(P.edit), Depends(require_csrf)],
             status_code=303)
def sitrep_correct(sitrep_id: Id, request: Request, text: str = Form(""), note: str = Form(""),
                   region: list[str] | None = Form(None), file: UploadFile | None = File(None)):
    source = uploads.read_text(file, text, limit=uploads.SITREP_MAX_BYTES, what="SITREP")
    try:
        parsed = sitrep_text.parse(source, source="the corrected text")
        with db.session_scope(request.app.state.engine) as session:
            current = sitreps.region_slugs(sitreps.get(session, sitrep_id))
            wanted = [str(r) for r in region or []][:100]
            revision = revisions.correct(session, sitrep_id, parsed, by=request.state.admin.username, note=note,
                                         regions=wanted if wanted and sorted(wanted) != sorted(current) else None)
            number = revision.number
    except InputError as exc:  # a text that does not parse, a missing note: said on the page, nothing kept
        flash(request, f"Not corrected: {exc}", "error")
        return _back(f"/admin/sitreps/{sitrep_id}")
    flash(request, f"Correction (revision {number}) saved: someone else approves it, and then everyone "
                   "who received the SITREP is told.")
    return _back(f"/admin/sitreps/{sitrep_id}")


@router.post("/sitreps/{sitrep_id}/approve-correction", dependencies=[requires(P.approve), Depends(require_csrf)],
             status_code=303)
def sitrep_approve_correction(sitrep_id: Id, request: Request):
    with db.session_scope(request.app.state.engine) as session:
        done = revisions.approve_correction(session, sitrep_id, by=request.state.admin.username,
                                            two_person=request.app.state.settings.two_person_rule)
        number, notices = done.revision.number, done.notices
    flash(request, f"Revision {number} is approved: {notices} earlier reader(s) will be told.")
    return _back(f"/admin/sitreps/{sitrep_id}")
