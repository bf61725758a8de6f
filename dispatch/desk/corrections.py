"""Corrections and retractions, the pure part: what a revision changed (a
readable diff of title, date, bullets and quotes), who already received a
SITREP and so must hear of it, and which Slack message carried it.

No I/O here: ``dispatch.revisions`` reads and writes the rows, and
``dispatch.revision_notices`` sends what these decide.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# The window keys of the notices: one per (reader, revision), so the ledger's
# unique (subscriber, window) key makes planning them twice add nothing.
PREFIXES = {"correction": "correction:", "retraction": "retraction:"}
MAX_DIFF_LINES = 60  # a notice shows at most this many changed lines; the web version has the rest
# Bullets or quotes a side up to which the diff is difflib's (quadratic on repeated
# lines); a SITREP may hold thousands (8,000 fit in 64 KB): beyond it, by membership.
MATCHED_LINES = 300


def window_key(kind: str, sitrep_id: int, number: int) -> str:
    return f"{PREFIXES[kind]}{sitrep_id}:{number}"


def parse_key(key: str) -> tuple[str, int, int] | None:
    """``correction:12:2`` -> ("correction", 12, 2); None for any other key."""
    for kind, prefix in PREFIXES.items():
        if key.startswith(prefix):
            sitrep_id, _, number = key[len(prefix):].partition(":")
            if sitrep_id.isdecimal() and number.isdecimal():
                return kind, int(sitrep_id), int(number)
    return None


def is_notice_key(key: str) -> bool:
    return key.startswith(tuple(PREFIXES.values()))


# --- content and the diff ----------------------------------------------------------

def snapshot(*, title: str, event_date: str, bullets: Iterable[str], quotes: Iterable[tuple[str, str]],
             regions: Iterable[str] | None = None) -> dict:
    """A SITREP's content as a revision keeps it: {title, event_date,
    bullets, quotes: [[who, text]], regions: [names]} (regions only when known)."""
    content = {"title": title, "event_date": event_date, "bullets": list(bullets),
               "quotes": [[who, text] for who, text in quotes]}
    if regions is not None:
        content["regions"] = list(regions)
    return content


@dataclass(frozen=True)
class Change:
    part: str  # title | date | regions | bullet | quote
    sign: str  # "-" removed, "+" added
    text: str

    def line(self) -> str:
        return f"{self.sign} {self.part}: {self.text}"


def diff(before: dict, after: dict) -> list[Change]:
    """What changed from ``before`` to ``after`` (snapshots), in reading
    order: title, date, bullets, quotes. A changed bullet reads as the old
    one removed and the new one added; unchanged lines are left out."""
    changes: list[Change] = []
    for part, key in (("title", "title"), ("date", "event_date")):
        if before.get(key) != after.get(key):
            changes += [Change(part, "-", str(before.get(key, ""))), Change(part, "+", str(after.get(key, "")))]
    if "regions" in before and "regions" in after and before["regions"] != after["regions"]:
        changes += [Change("regions", sign, ", ".join(side["regions"]) or "none")
                    for sign, side in (("-", before), ("+", after))]
    changes += _lines("bullet", before.get("bullets", []), after.get("bullets", []))
    quote = lambda q: f"“{q[1]}” — {q[0]}"  # noqa: E731
    changes += _lines("quote", [quote(q) for q in before.get("quotes", [])], [quote(q) for q in after.get("quotes", [])])
    return changes


def _lines(part: str, old: list[str], new: list[str], *, matched: int = MATCHED_LINES) -> list[Change]:
    if len(old) > matched or len(new) > matched:
        return _by_membership(part, old, new)
    # At most ``matched`` lines a side: the matcher's quadratic worst case (repeated
    # lines) stays small; autojunk off, as every line matters.
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    changes: list[Change] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        removed, added = old[i1:i2], new[j1:j2]
        # A replaced line reads next to its replacement: - old, + new, - old, + new …
        for index in range(max(len(removed), len(added))):
            if index < len(removed):
                changes.append(Change(part, "-", removed[index]))
            if index < len(added):
                changes.append(Change(part, "+", added[index]))
    return changes


def _by_membership(part: str, old: list[str], new: list[str]) -> list[Change]:
    """The lines only one side has (counted: a line twice on one side and
    once on the other is one change), in their order: one pass each, for
    lists too long for the matcher. Less readable than a diff, and bounded."""
    def only_in(side: list[str], other: list[str]) -> list[str]:
        left = Counter(other)
        kept = []
        for line in side:
            if left[line] > 0:
                left[line] -= 1
            else:
                kept.append(line)
        return kept
    return [Change(part, "-", line) for line in only_in(old, new)] + \
        [Change(part, "+", line) for line in only_in(new, old)]


def shown(changes: list[Change], *, limit: int = MAX_DIFF_LINES) -> tuple[list[Change], int]:
    """The changes a notice shows, and how many more were left out."""
    return changes[:limit], max(0, len(changes) - limit)


def changed_parts(changes: list[Change]) -> list[str]:
    """"title", "bullets" …, in reading order: the summary line of a history entry."""
    names = {"title": "title", "date": "date", "regions": "regions", "bullet": "bullets", "quote": "quotes"}
    return list(dict.fromkeys(names[c.part] for c in changes))


# --- who received what ------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    """A sent delivery that carried the SITREP, with its reader as now."""

    delivery_id: int
    subscriber_id: int
    window_key: str
    reader_active: bool


def to_tell(received: Iterable[Received]) -> list[int]:
    """The readers who hear of a revision: everyone a digest carrying the
    SITREP reached, once each, and only while still active (an unsubscribed
    or bounced reader is sent nothing, not even a correction). Earlier
    notices are not deliveries of the SITREP: their readers are already
    counted by the digest that reached them."""
    readers = {r.subscriber_id for r in received if r.reader_active and not is_notice_key(r.window_key)
               and not r.window_key.startswith("notice:")}
    return sorted(readers)


@dataclass(frozen=True)
class SlackPost:
    channel: str
    ts: str
    carried: tuple[int, ...] | None  # the SITREPs that message shows; None when not known


def slack_post(receipt: str | None, sitrep_id: int, *, delivered: tuple[int, ...] = ()) -> SlackPost | None:
    """The bot-token message that carried ``sitrep_id``, from a sent
    delivery's receipt ({"channel", "ts": [...], "sitreps": [[ids of each
    message]]}) and the SITREPs the delivery carried. Without "sitreps"
    (receipts written before it was kept) a one-message delivery showed
    them all, and of several messages the first is taken, its content
    unknown (so it is replied to, not rewritten). None for a webhook
    (nothing to update there) or a receipt that is not ours."""
    try:
        data = json.loads(receipt or "")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    channel, posted = data.get("channel"), data.get("ts")
    if not isinstance(channel, str) or channel == "webhook" or not isinstance(posted, list) or not posted:
        return None
    listed = data.get("sitreps")
    if isinstance(listed, list) and len(listed) == len(posted):
        for ts, ids in zip(posted, listed):
            if isinstance(ids, list) and sitrep_id in ids and isinstance(ts, str) and ts:
                return SlackPost(channel, ts, tuple(i for i in ids if isinstance(i, int)))
    ts = posted[0]
    if not isinstance(ts, str) or not ts:
        return None
    return SlackPost(channel, ts, tuple(delivered) if len(posted) == 1 and delivered else None)


def receipt_sitreps(receipt: dict, carried: list[tuple[int, ...]], *, room: int) -> dict:
    """``receipt`` with the SITREPs of each posted message added, if the
    whole still fits in ``room`` characters (a receipt is bounded); else as it was."""
    if not carried or not any(carried):
        return receipt
    fuller = {**receipt, "sitreps": [list(ids) for ids in carried]}
    return fuller if len(json.dumps(fuller)) <= room else receipt
