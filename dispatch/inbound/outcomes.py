"""What a bounce, a complaint or a mailto unsubscribe does to a reader: pure
decisions, no I/O (tests/test_outcomes.py).

- A hard bounce (a 5.x.x status, except 5.2.2 "mailbox full") marks the
  reader bounced at once: the address does not exist or refuses us for good.
- A soft bounce (4.x.x, 5.2.2, or a "delayed" notice) adds to a score that
  halves every ``HALF_LIFE``: as Mailman's bounce scoring, a mailbox that is
  full now and then never crosses the limit; one that fails day after day
  does. At most one point a day, because an MTA retrying a message sends
  several notices about the same failure.
- A complaint (ARF ``Feedback-Type: abuse``, a provider's spam report)
  unsubscribes the reader with reason "complaint": mailing someone who
  pressed "spam" is what gets a sender blocked.
- A mailto unsubscribe is the reader's own opt-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

HALF_LIFE = timedelta(days=7)
ONE_POINT_PER = timedelta(days=1)
COMPLAINT_REASON = "complaint"


class Kind(str, Enum):
    hard_bounce = "hard_bounce"
    soft_bounce = "soft_bounce"
    complaint = "complaint"
    unsubscribe = "unsubscribe"
    ignored = "ignored"  # a "delivered" / "relayed" notice, or no status at all


def status_class(status: str | None, *, action: str | None = None) -> Kind:
    """An RFC 3463 status (``5.1.1``) and an RFC 3464 action → the kind of bounce."""
    action = (action or "").strip().lower()
    if action in ("delivered", "relayed", "expanded"):
        return Kind.ignored
    parts = _status_parts(status)
    if parts is None:
        # A failure with no usable status: count it softly rather than lose a live reader.
        return Kind.soft_bounce if action in ("failed", "delayed") else Kind.ignored
    klass, subject, detail = parts
    if klass == 2:
        return Kind.ignored
    if action == "delayed" or klass == 4 or (subject, detail) == (2, 2):
        return Kind.soft_bounce
    return Kind.hard_bounce


def _status_parts(status: str | None) -> tuple[int, int, int] | None:
    if not status:
        return None
    pieces = status.strip()[:16].split(".")
    if len(pieces) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in pieces):
        return None
    klass, subject, detail = (int(p) for p in pieces)
    return (klass, subject, detail) if klass in (2, 4, 5) else None


def valid_status(status: str | None) -> str | None:
    """The status as stored: ``5.1.1``, or None when it is not one."""
    parts = _status_parts(status)
    return ".".join(map(str, parts)) if parts else None


def decayed(score: float, *, since: datetime | None, now: datetime) -> float:
    if since is None or score <= 0:
        return 0.0
    elapsed = max((now - since).total_seconds(), 0.0)
    return score * 0.5 ** (elapsed / HALF_LIFE.total_seconds())


@dataclass(frozen=True)
class Decision:
    kind: Kind
    mark: str | None  # "bounced" | "unsubscribed" | None: leave the status as it is
    reason: str  # for the reader's status_reason and the event's effect
    score: float | None = None  # the new soft-bounce score (None: unchanged)
    scored: bool = False  # the score was raised now (soft_bounce_at moves)


def decide(kind: Kind, *, status: str | None, diagnostic: str, score: float, scored_at: datetime | None,
           now: datetime, limit: float) -> Decision:
    """What one event does, given the reader's soft-bounce score so far."""
    what = " ".join(x for x in (status, diagnostic[:200]) if x)
    if kind == Kind.hard_bounce:
        return Decision(kind, "bounced", f"hard bounce: {what}" if what else "hard bounce")
    if kind == Kind.complaint:
        return Decision(kind, "unsubscribed", COMPLAINT_REASON)
    if kind == Kind.unsubscribe:
        return Decision(kind, "unsubscribed", "unsubscribed by mail")
    if kind != Kind.soft_bounce:
        return Decision(kind, None, "nothing to do")
    current = decayed(score, since=scored_at, now=now)
    if scored_at is not None and now - scored_at < ONE_POINT_PER:
        return Decision(kind, None, f"soft bounce; counted once a day (score {current:.2f} of {limit:g})",
                        score=None)
    new = current + 1.0
    if new >= limit:
        return Decision(kind, "bounced", f"soft bounces past the limit ({new:.2f} of {limit:g}); last: {what}",
                        score=new, scored=True)
    return Decision(kind, None, f"soft bounce (score {new:.2f} of {limit:g})", score=new, scored=True)
