"""A SITREP's revision history as readers see it.

The history is the ``sitrep_change`` rows (import, approval, edits,
corrections, withdrawal or retraction). A released SITREP changes only by
a correction (dispatch.revisions), recorded as "corrected" once approved,
with the revision's number, what it changed and its note; a retraction as
"retracted" with its reason. Pending corrections are the desk's business
and stay out. (An edit made after the first approval, which older
databases may hold, is shown as a correction too.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from dispatch.models import SitrepChange

# What each recorded action means to a reader; actions not listed are kept
# out of the public history (they are bookkeeping, like region tagging).
SHOWN = {"imported": "Filed", "approved": "Published", "withdrawn": "Withdrawn", "edited": "Edited",
         "edit": "Edited", "corrected": "Correction", "retracted": "Retracted"}


@dataclass(frozen=True)
class Revision:
    at: datetime
    label: str  # Filed | Published | Edited | Correction | Withdrawn | Retracted
    detail: str  # what changed, or the withdrawal reason
    actor: str  # shown to admins only
    correction: bool  # an edit after the first publication


def revisions(changes: list[tuple[datetime, str, str, str]]) -> list[Revision]:
    """(at, action, actor, detail) rows, oldest first → what the history
    shows. Pure: edits after the first approval become corrections."""
    published = False
    shown: list[Revision] = []
    for at, action, actor, detail in changes:
        if action == "approved":
            label = "Published" if not published else "Published again"
            published = True
        elif action == "corrected":
            label = "Correction"
        elif action.startswith("edit"):
            label = "Correction" if published else "Edited"
        elif action in SHOWN:
            label = SHOWN[action]
        else:
            continue
        shown.append(Revision(at=at, label=label, detail=detail, actor=actor,
                              correction=label == "Correction"))
    return shown


def history(session: Session, sitrep_id: int) -> list[Revision]:
    rows = session.exec(select(SitrepChange.at, SitrepChange.action, SitrepChange.actor, SitrepChange.detail)
                        .where(SitrepChange.sitrep_id == sitrep_id)
                        .order_by(col(SitrepChange.at), col(SitrepChange.id))).all()
    return revisions([tuple(r) for r in rows])
