"""The preferences form, shared by the subscribe page, the subscriber's
preferences page and the admin's subscriber pages: what it shows and how
its fields become ``subscribers.Preferences``."""

from __future__ import annotations

from zoneinfo import available_timezones

from sqlmodel import Session, select
from starlette.datastructures import FormData

from dispatch import taxonomy
from dispatch.models import Analyst, Cadence, MailFormat, Subscriber
from dispatch.subscribers import WEEKDAYS, Preferences

ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))) + ["UTC"]


def choices(session: Session) -> dict:
    """Everything the form offers."""
    return {
        "all_regions": [(r.slug, r.name) for r in taxonomy.all_regions(session)],
        "all_analysts": [(a.slug, a.name) for a in session.exec(select(Analyst).order_by(Analyst.name)).all()],
        "cadences": [c.value for c in Cadence],
        "formats": [f.value for f in MailFormat],
        "weekdays": list(enumerate(WEEKDAYS)),
        "zones": ZONES,
    }


def values_of(subscriber: Subscriber | None) -> dict:
    """The form's current values: a subscriber's, or the defaults for a new one."""
    if subscriber is None:
        return {"name": "", "regions": [], "analysts": [], "cadence": "daily", "send_at": "07:00",
                "timezone": "UTC", "weekday": 0, "format": "html"}
    return {"name": subscriber.name, "regions": [r.slug for r in subscriber.regions],
            "analysts": [a.slug for a in subscriber.analysts], "cadence": subscriber.cadence.value,
            "send_at": subscriber.send_at, "timezone": subscriber.timezone, "weekday": subscriber.weekday,
            "format": subscriber.format.value}


def values_from(form: FormData) -> dict:
    """The submitted values, to show again beside an error."""
    return {"name": str(form.get("name", "")), "regions": form.getlist("region"),
            "analysts": form.getlist("analyst"), "cadence": str(form.get("cadence", "daily")),
            "send_at": str(form.get("send_at", "07:00")), "timezone": str(form.get("timezone", "UTC")),
            "weekday": _weekday_shown(str(form.get("weekday", "0"))),
            "format": str(form.get("format", "html"))}


def _weekday_shown(value: str) -> int:
    """The weekday to select again; a value that is no weekday selects Monday.
    (isdecimal and short: int() refuses "²" and is quadratic on long digit strings.)"""
    return int(value) if len(value) == 1 and value.isdecimal() and int(value) < 7 else 0


def preferences_from(form: FormData) -> Preferences:
    """No region ticked means every region; no analyst, every analyst."""
    return Preferences(
        name=str(form.get("name", "")), regions=[str(v) for v in form.getlist("region")],
        analysts=[str(v) for v in form.getlist("analyst")], cadence=str(form.get("cadence", "daily")),
        send_at=str(form.get("send_at", "07:00")), timezone=str(form.get("timezone", "UTC")),
        weekday=str(form.get("weekday", "0")), format=str(form.get("format", "html")))
