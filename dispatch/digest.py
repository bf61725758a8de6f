"""Who gets what, and when. Pure functions over plain values: no database,
no clock (``now`` is always an argument), no I/O.

Windows. A daily subscriber's window ends at its local ``send_at`` each day,
a weekly one at ``send_at`` on its weekday, both in the subscriber's own IANA
time zone. A window covers the SITREPs approved after the previous window's
end, up to and including its own end. When several ends have passed since the
last planning (the process was down), they collapse into one window ending at
the latest of them: one digest, never a burst. An ``immediate`` subscriber has
one window per approval of a SITREP (``immediate_windows``), for SITREPs
approved after it subscribed.

FLASH. A SITREP approved as a FLASH goes at once to every matching reader,
whatever their cadence, in a window of its own (``flash_windows``); a
reader's later digest leaves out what reached them in a FLASH
(``without_flashed``), and an immediate reader gets the FLASH instead of
the usual immediate delivery, never both.

DST. A ``send_at`` that falls in a spring-forward gap is sent when the clocks
reach the other side of the gap (02:30 that does not exist → 03:30); one that
falls in an autumn overlap is sent at its first occurrence, once.

Matching. An empty region or analyst set means "all". Regions are OR-ed with
each other, analysts with each other, and the two facets are AND-ed. A SITREP
matches an analyst when one of its quotes is by that analyst.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc

@dataclass(frozen=True)
class Quote:
    analyst_slug: str
    analyst_name: str
    analyst_title: str | None
    text: str


@dataclass(frozen=True)
class SitrepView:
    """An approved SITREP as digests see it."""

    id: int
    title: str
    event_date: date
    approved_at: datetime
    regions: tuple[str, ...]
    summary: tuple[str, ...]
    commentary: tuple[Quote, ...] = ()
    priority: int = 0
    region_names: tuple[str, ...] = ()
    revision: str = ""  # changes whenever the stored SITREP is edited
    flash: bool = False  # approved as a FLASH

    @property
    def analyst_slugs(self) -> frozenset[str]:
        return frozenset(q.analyst_slug for q in self.commentary)


@dataclass(frozen=True)
class Recipient:
    """A subscriber's preferences as digests see them."""

    id: int
    kind: str  # email | slack
    address: str
    name: str = ""
    timezone: str = "UTC"
    send_at: str = "07:00"
    cadence: str = "daily"  # immediate | daily | weekly
    weekday: int = 0  # Monday = 0
    format: str = "html"  # html | text
    regions: frozenset[str] = frozenset()
    analysts: frozenset[str] = frozenset()  # analyst slugs
    region_names: tuple[str, ...] = ()  # for the "why you get this" line
    analyst_names: tuple[str, ...] = ()
    created_at: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    planned_through: datetime | None = None


# --- matching ------------------------------------------------------------------

def matches(recipient: Recipient, sitrep: SitrepView) -> bool:
    if recipient.regions and not recipient.regions.intersection(sitrep.regions):
        return False
    if recipient.analysts and not recipient.analysts.intersection(sitrep.analyst_slugs):
        return False
    return True


# --- windows ---------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    key: str  # unique per subscriber: the ledger's (subscriber, window) key
    start: datetime  # exclusive
    end: datetime  # inclusive
    sitrep_ids: tuple[int, ...]


def local_send_instant(day: date, send_at: str, tz: ZoneInfo) -> datetime:
    """The UTC instant of ``send_at`` on a local calendar day.

    zoneinfo resolves a wall time in a gap with the offset from before the
    gap (PEP 495, fold=0), which lands just past the gap, and a wall time in
    an overlap at its first occurrence — both what a reader expects.
    """
    hour, minute = (int(part) for part in send_at.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=tz).astimezone(UTC)


def _is_send_day(recipient: Recipient, day: date) -> bool:
    return recipient.cadence == "daily" or day.weekday() == recipient.weekday


def latest_window_end(recipient: Recipient, at_or_before: datetime) -> datetime:
    """The latest daily/weekly window end at or before the given instant."""
    return _latest_end(recipient.cadence, recipient.weekday, recipient.timezone, recipient.send_at, at_or_before)


@lru_cache(maxsize=4096)  # planning asks this for every reader; few distinct answers
def _latest_end(cadence: str, weekday: int, timezone_name: str, send_at: str, at_or_before: datetime) -> datetime:
    tz = ZoneInfo(timezone_name)
    day = at_or_before.astimezone(tz).date()
    for _ in range(9):  # a weekly end is at most 7 local days back
        if cadence == "daily" or day.weekday() == weekday:
            end = local_send_instant(day, send_at, tz)
            if end <= at_or_before:
                return end
        day -= timedelta(days=1)
    raise AssertionError("unreachable: every week has a send day")


def next_window_end(recipient: Recipient, after: datetime) -> datetime:
    """The first daily/weekly window end strictly after the given instant."""
    tz = ZoneInfo(recipient.timezone)
    day = after.astimezone(tz).date()
    for _ in range(9):
        if _is_send_day(recipient, day):
            end = local_send_instant(day, recipient.send_at, tz)
            if end > after:
                return end
        day += timedelta(days=1)
    raise AssertionError("unreachable: every week has a send day")


def window_key(recipient: Recipient, end: datetime) -> str:
    local_day = end.astimezone(ZoneInfo(recipient.timezone)).date().isoformat()
    return f"{recipient.cadence}:{local_day}"


def planned_from(recipient: Recipient) -> datetime:
    """Where planning starts: the last planned end, or for a new subscriber
    the window end before it joined (so its first digest is a normal one)."""
    return planning_start(recipient.cadence, recipient.weekday, recipient.timezone, recipient.send_at,
                          created_at=recipient.created_at, planned_through=recipient.planned_through)


def planning_start(cadence: str, weekday: int, timezone_name: str, send_at: str, *, created_at: datetime,
                   planned_through: datetime | None) -> datetime:
    """``planned_from`` for a subscriber's schedule given as plain values."""
    if planned_through is not None:
        return planned_through
    if cadence == "immediate":
        return created_at
    return _latest_end(cadence, weekday, timezone_name, send_at, created_at)


@dataclass(frozen=True)
class Plan:
    windows: tuple[Window, ...]
    planned_through: datetime  # store this: the next planning starts here
    next_due_at: datetime  # and this: no need to look at the subscriber before then


def plan(recipient: Recipient, sitreps: Iterable[SitrepView], *, now: datetime) -> Plan:
    """The daily/weekly window due for one subscriber at ``now`` that was not
    planned before, with the SITREPs it carries. Missed windows collapse into
    the latest one. An empty window yields nothing but still moves
    ``planned_through`` forward."""
    if recipient.cadence == "immediate":
        raise ValueError("immediate subscribers are planned per SITREP: use immediate_windows()")
    start = planned_from(recipient)
    end = latest_window_end(recipient, now)
    if end <= start:
        return Plan(windows=(), planned_through=start, next_due_at=next_window_end(recipient, start))
    ids = tuple(sorted(s.id for s in sitreps if start < s.approved_at <= end and matches(recipient, s)))
    windows = (Window(key=window_key(recipient, end), start=start, end=end, sitrep_ids=ids),) if ids else ()
    return Plan(windows=windows, planned_through=end, next_due_at=next_window_end(recipient, end))


def immediate_key(sitrep: SitrepView) -> str:
    # One per approval: a SITREP withdrawn and approved again goes out again.
    return f"sitrep:{sitrep.id}@{sitrep.approved_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def immediate_windows(recipient: Recipient, sitreps: Iterable[SitrepView]) -> tuple[Window, ...]:
    """One window per newly approved SITREP that the subscriber wants and
    that was approved after it subscribed."""
    return tuple(
        Window(key=immediate_key(s), start=s.approved_at, end=s.approved_at, sitrep_ids=(s.id,))
        for s in sorted(sitreps, key=lambda s: (s.approved_at, s.id))
        if s.approved_at > recipient.created_at and matches(recipient, s)
    )


FLASH_PREFIX = "flash:"


def flash_key(sitrep: SitrepView) -> str:
    # One per approval, as immediate_key: a FLASH withdrawn and approved again goes out again.
    return f"{FLASH_PREFIX}{sitrep.id}@{sitrep.approved_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def is_flash(window_key: str) -> bool:
    return window_key.startswith(FLASH_PREFIX)


def flash_windows(recipient: Recipient, sitreps: Iterable[SitrepView]) -> tuple[Window, ...]:
    """One window per FLASH SITREP the reader wants, whatever their cadence
    and whenever they subscribed: a FLASH goes to every matching reader."""
    return tuple(
        Window(key=flash_key(s), start=s.approved_at, end=s.approved_at, sitrep_ids=(s.id,))
        for s in sorted(sitreps, key=lambda s: (s.approved_at, s.id))
        if s.flash and matches(recipient, s)
    )


def without_flashed(window: Window, flashed: Iterable[int]) -> Window | None:
    """A digest window less the SITREPs that reached its reader in a FLASH;
    None when nothing is left (an empty digest is not sent)."""
    flashed = set(flashed)
    kept = tuple(i for i in window.sitrep_ids if i not in flashed)
    if kept == window.sitrep_ids:
        return window
    return Window(key=window.key, start=window.start, end=window.end, sitrep_ids=kept) if kept else None


def upcoming_window(recipient: Recipient, *, now: datetime) -> tuple[datetime, datetime]:
    """(start, end) of the window that will be delivered next."""
    start = planned_from(recipient)
    if recipient.cadence == "immediate":
        return start, now
    due = latest_window_end(recipient, now)
    if due > start:
        return start, due
    return start, next_window_end(recipient, max(now, start))


# --- digests ---------------------------------------------------------------------

@dataclass(frozen=True)
class DigestQuote:
    quote: Quote
    followed: bool  # by an analyst the reader follows: shown first and marked


@dataclass(frozen=True)
class DigestItem:
    sitrep: SitrepView
    quotes: tuple[DigestQuote, ...]


@dataclass(frozen=True)
class Digest:
    recipient: Recipient
    window_key: str
    items: tuple[DigestItem, ...] = field(default=())

    @property
    def sitrep_ids(self) -> tuple[int, ...]:
        return tuple(item.sitrep.id for item in self.items)

    @property
    def flash(self) -> bool:
        """Sent as a FLASH: marked so in the subject, the body and the Slack header."""
        return is_flash(self.window_key)

    def body_key(self) -> tuple:
        """Digests with equal keys have byte-identical bodies (only the
        personal parts differ), so they can share one rendering."""
        return (self.recipient.kind, self.recipient.format, self.flash, items_key(self.items))


def items_key(items: Sequence[DigestItem]) -> tuple:
    """What of a digest's items shapes its body: each SITREP with its
    revision (an edited SITREP is a new body) and which quotes are followed."""
    return tuple((item.sitrep.id, item.sitrep.revision, tuple(q.followed for q in item.quotes)) for item in items)


def order_sitreps(sitreps: Iterable[SitrepView]) -> list[SitrepView]:
    """Higher priority first, then the newest event, then the latest approval."""
    return sorted(sitreps, key=lambda s: (-s.priority, -s.event_date.toordinal(), -s.approved_at.timestamp(), -s.id))


def build_digest(recipient: Recipient, window_key: str, sitreps: Sequence[SitrepView]) -> Digest:
    return Digest(recipient=recipient, window_key=window_key, items=digest_items(recipient.analysts, sitreps))


def digest_items(followed: frozenset[str], sitreps: Sequence[SitrepView]) -> tuple[DigestItem, ...]:
    """The SITREPs in digest order, each with its quotes marked and ordered
    for a reader who follows these analysts (the same for every such reader)."""
    items = []
    for sitrep in order_sitreps(sitreps):
        marked = [DigestQuote(q, q.analyst_slug in followed) for q in sitrep.commentary]
        # Stable: followed analysts first, each group in the SITREP's own order.
        marked.sort(key=lambda dq: not dq.followed)
        items.append(DigestItem(sitrep=sitrep, quotes=tuple(marked)))
    return tuple(items)
