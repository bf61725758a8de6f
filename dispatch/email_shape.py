"""How big a digest gets and what it leads with: pure decisions over digest
items, no templates, no I/O.

A digest shows at most ``max_full`` SITREPs in full; the rest become linked
headlines, so a 50-SITREP email stays whole in Gmail (which clips HTML past
102 KB, hiding the footer and its unsubscribe link). Subjects lead with the
topic and stay short; the preheader (the inbox preview line) says something
the subject does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dispatch.digest import DigestItem

SUBJECT_LIMIT = 60  # characters: what phone inboxes show before cutting
FLASH_MARK = "FLASH: "  # leads a FLASH's subject, inside the same limit
PREHEADER_LIMIT = 140
GROUP_CONTENTS_AT = 8  # a contents list this long is grouped by region


def one_line(text: str) -> str:
    """Header-safe: no CR/LF or other control characters, single spaces."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word where there is one, with "…"."""
    text = one_line(text)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def subject(titles: Sequence[str], *, limit: int = SUBJECT_LIMIT, flash: bool = False) -> str:
    """"Taiwan Strait drills, Baltic cable cut + 3 more": as many titles as
    fit in ``limit`` with the count of the rest; the first title always,
    shortened if it alone is too long. A FLASH leads with "FLASH: ", the
    titles shortened to leave room for it."""
    if flash:
        rest = subject(titles, limit=limit - len(FLASH_MARK))
        return FLASH_MARK + rest if rest else ""
    titles = [one_line(t) for t in titles]
    if not titles:
        return ""
    if len(titles) == 1:
        return shorten(titles[0], limit)
    shown: list[str] = []
    for index, title in enumerate(titles):
        rest = len(titles) - index - 1
        tail = f" + {rest} more" if rest else ""
        candidate = ", ".join([*shown, title]) + tail
        if len(candidate) <= limit:
            shown.append(title)
            continue
        if not shown:  # the first title alone is too long: shorten it to leave room for the count
            room = limit - len(f" + {len(titles) - 1} more")
            return shorten(title, room) + f" + {len(titles) - 1} more"
        break
    rest = len(titles) - len(shown)
    return ", ".join(shown) + (f" + {rest} more" if rest else "")


@dataclass(frozen=True)
class Shape:
    full: tuple[DigestItem, ...]  # shown whole, in digest order
    headlines: tuple[DigestItem, ...]  # title, regions and a link only

    @property
    def items(self) -> tuple[DigestItem, ...]:
        return self.full + self.headlines


def shape(items: Sequence[DigestItem], *, max_full: int) -> Shape:
    if max_full < 1:
        raise ValueError("max_full must be at least 1")
    items = tuple(items)
    return Shape(full=items[:max_full], headlines=items[max_full:])


def preheader(items: Sequence[DigestItem], *, subject_line: str, limit: int = PREHEADER_LIMIT) -> str:
    """The inbox preview: the titles the subject leaves out, or else the
    first SITREP's lead bullet; never the subject again."""
    titles = [one_line(i.sitrep.title) for i in items]
    cut = subject_line.split("…", 1)[0] if "…" in subject_line else None  # a title the subject shortened
    unnamed = [t for t in titles if t not in subject_line and not (cut and t.startswith(cut.split(", ")[-1]))]
    if len(items) > 1 and unnamed:
        return shorten("Also: " + "; ".join(unnamed), limit)
    for item in items:
        if item.sitrep.summary:
            return shorten(item.sitrep.summary[0], limit)
    return ""


@dataclass(frozen=True)
class ContentsGroup:
    name: str | None  # a region's name; None when the list is not grouped
    items: tuple[DigestItem, ...]


def contents(items: Sequence[DigestItem], *, group_at: int = GROUP_CONTENTS_AT) -> tuple[ContentsGroup, ...]:
    """The contents list: flat when short; grouped by each SITREP's first
    region (in order of first appearance) when ``group_at`` or longer."""
    items = tuple(items)
    if len(items) < group_at:
        return (ContentsGroup(None, items),)
    groups: dict[str, list[DigestItem]] = {}
    for item in items:
        name = item.sitrep.region_names[0] if item.sitrep.region_names else "Other"
        groups.setdefault(name, []).append(item)
    return tuple(ContentsGroup(name, tuple(group)) for name, group in groups.items())
