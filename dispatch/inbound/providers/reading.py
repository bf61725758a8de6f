"""What every provider parser returns (``Verified``, a list of
``ProviderEvent``) or refuses with (``Refused``), and the small checks
they share: bounded JSON, a status code found in a text, fresh timestamps,
and one mapping from "permanent / temporary" to the kinds of
``dispatch.inbound.outcomes``.

The parsers are pure: bytes and headers in, a verdict out; nothing here
touches the database or the network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dispatch import fields
from dispatch.inbound import outcomes
from dispatch.inbound.outcomes import Kind

# One request, whatever the provider: SendGrid batches its events (it posts
# when a batch nears 768 KB), an SNS message is at most 256 KB before JSON
# escaping; one event is a few hundred bytes at the least.
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 3000
# A signed timestamp may be this far in the future (clock skew). How old it
# may be is each provider's (its MAX_AGE: the span over which it retries a
# delivery, in case a retry keeps the first signature); a replay inside that
# span is stopped by the request's nonce, kept as long (record).
CLOCK_SKEW = timedelta(minutes=5)
MAX_ADDRESS = 320
MAX_MESSAGE_ID = 250
MAX_DIAGNOSTIC = 500
MAX_KEY = 180  # events.record clips keys at 200; the source part fits beside it

# An RFC 3463 status inside a server's words ("550 5.1.1 <x>: no such user");
# the text is cut to STATUS_SCAN first, and the pattern is linear.
_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
STATUS_SCAN = 1000


class Refused(Exception):
    """The request is not acted on: ``status`` is the HTTP answer (400
    unreadable, 401/403 unverified or stale, 413 too many events) and
    ``reason`` the words for it (never a secret or a signature)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ProviderEvent:
    """One bounce or complaint as a provider reports it, normalised."""

    kind: Kind
    recipient: str | None
    message_id: str | None  # the Message-ID of our email as the provider echoes it, <…>
    status: str | None  # RFC 3463, 5.1.1
    diagnostic: str
    event_key: str  # the provider's own id for the event: a second copy changes nothing
    address_invalid: bool = False  # the provider says the mailbox does not exist (see record)


@dataclass(frozen=True)
class Verified:
    """A request whose signature (or password) checked out, read."""

    source: str
    events: tuple[ProviderEvent, ...] = ()
    ignored: int = 0  # events of kinds nothing is done about (delivered, opened, deferred …)
    nonce: str | None = None  # what makes the same request again change nothing
    expires_at: datetime | None = None  # after this, a stale timestamp refuses it anyway
    subscribe_url: str | None = None  # SNS: the URL that confirms a subscription
    note: str = ""


def load_json(body: bytes | str, *, what: str) -> Any:
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(400, f"{what} is not JSON") from None


def text(value: Any, limit: int) -> str:
    """A string field as it may be stored: other types become "", controls spaces."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return ""
    return fields.clip_line(value[: limit * 4], limit)


def address(value: Any) -> str | None:
    found = text(value, MAX_ADDRESS).strip().strip("<>").strip()
    return found.lower() if "@" in found else None


def message_id(value: Any) -> str | None:
    found = text(value, MAX_MESSAGE_ID).strip()
    if not found or " " in found:
        return None
    return found if found.startswith("<") else f"<{found}>"


def status_in(*texts: Any) -> str | None:
    """The first RFC 3463 status given outright or found in the texts."""
    for value in texts:
        found = _STATUS.search(text(value, STATUS_SCAN))
        if found:
            return outcomes.valid_status(found.group(1))
    return None


def bounce_kind(*, permanent: bool | None, status: str | None) -> Kind:
    """The provider's word (permanent / temporary / cannot tell) and the
    status, as ``outcomes`` sees a DSN: a 4.x.x or a full mailbox (5.2.2)
    is soft even when the provider calls it permanent; a bounce it cannot
    classify counts softly rather than lose a live reader."""
    parts = (status or "").split(".")
    if status and (parts[0] == "4" or parts[1:] == ["2", "2"]):
        return Kind.soft_bounce
    if permanent is True:
        return Kind.hard_bounce
    if permanent is False:
        return Kind.soft_bounce
    return Kind.hard_bounce if status and parts[0] == "5" else Kind.soft_bounce


def mailbox_missing(status: str | None) -> bool:
    """5.1.x: the destination address itself is bad (RFC 3463 "addressing status")."""
    return bool(status) and status.startswith("5.1.")


def unix_time(stamp: str, *, what: str) -> datetime:
    """A signed Unix timestamp (digits, checked by the caller) as a time;
    one past any calendar (a 12-digit one is the year 33658) is refused."""
    try:
        return datetime.fromtimestamp(int(stamp), timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise Refused(403, f"{what} is not a time") from None


def fresh(at: datetime, *, now: datetime, max_age: timedelta, what: str) -> None:
    if at < now - max_age:
        raise Refused(403, f"{what} is older than {_span(max_age)}: refused as a replay")
    if at > now + CLOCK_SKEW:
        raise Refused(403, f"{what} is in the future")


def _span(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    return f"{minutes} minutes" if minutes < 120 else f"{minutes // 60} hours {minutes % 60} minutes"


def key(*parts: Any) -> str:
    return text(":".join(str(p) for p in parts if p not in (None, "")), MAX_KEY)
