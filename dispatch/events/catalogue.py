"""The event types an event webhook can ask for.

A SITREP under embargo emits nothing until its release (sitrep.approved
then); cancelling such a release emits nothing either (sitreps.cancel_release).
"""

from __future__ import annotations

TYPES = (
    "sitrep.approved",
    "sitrep.corrected",  # a correction approved (dispatch.revisions)
    "sitrep.retracted",  # a released SITREP withdrawn with notices to its readers (dispatch.revisions)
    "sitrep.withdrawn",
    "delivery.sent",
    "delivery.failed",
    "subscriber.created",
    "subscriber.unsubscribed",
    "subscriber.bounced",
)


def check_types(values) -> list[str]:
    """The event types given, deduplicated in catalogue order; a refusal names the bad one."""
    from dispatch.errors import FieldError

    wanted = set()
    for value in values:
        value = str(value).strip()
        if value not in TYPES:
            raise FieldError("event", f"{value[:60]!r} is not an event type (one of {', '.join(TYPES)})")
        wanted.add(value)
    if not wanted:
        raise FieldError("event", f"name at least one event type (one of {', '.join(TYPES)})")
    return [t for t in TYPES if t in wanted]
