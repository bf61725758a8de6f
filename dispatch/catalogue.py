"""The region catalogue and region suggestions from the places a text names.

The data lives in ``data/regions.toml`` so that editors can extend it
without touching code. Everything here is pure: no database, no I/O beyond
reading that packaged file once.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class RegionEntry:
    slug: str
    name: str
    places: Mapping[str, tuple[str, ...]]  # place -> the spellings that name it


@cache
def regions() -> tuple[RegionEntry, ...]:
    raw = tomllib.loads(resources.files("dispatch").joinpath("data/regions.toml").read_text("utf-8"))
    return tuple(
        RegionEntry(
            slug=slug,
            name=body["name"],
            places={place: tuple(spellings) for place, spellings in body.get("places", {}).items()},
        )
        for slug, body in raw.items()
    )


def region_names() -> dict[str, str]:
    return {entry.slug: entry.name for entry in regions()}


@cache
def _matcher() -> tuple[re.Pattern[str], dict[str, tuple[str, str]]]:
    """One pattern over every spelling; at each place the longest spelling
    that fits wins, so that "South Sudan" wins over "Sudan" and "North
    Korean" over "Korea".

    It runs over whole SITREPs, so it must stay linear: it has no
    quantifier but the trie's optional tails, each tried once per place, and
    one-character lookarounds. The spellings go in as a trie ("South
    (?:Africa|Sudan)" rather than each spelling in turn): a flat alternation
    of 500 spellings was tried one by one at every word, a second per megabyte."""
    owner: dict[str, tuple[str, str]] = {}
    for entry in regions():
        for place, spellings in entry.places.items():
            for spelling in spellings:
                owner.setdefault(spelling, (entry.slug, place))
    # Whole words only: not inside a longer word, nor glued to a dotted
    # abbreviation ("U.S." must not match inside "U.S.A.").
    pattern = r"(?<![\w.])" + _trie_pattern(owner) + r"(?!\w|\.\w)"
    return re.compile(pattern), owner


def _trie_pattern(words) -> str:
    """A regular expression matching exactly the given words, longest first:
    where a word ends and a longer one goes on, the longer one is tried first
    (a greedy optional tail), and backtracking falls back to the shorter."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def pattern(node: dict) -> str:
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return "(?:" + body + ")?" if "" in node else body

    return pattern(trie)


@dataclass(frozen=True)
class RegionSuggestion:
    slug: str
    places: tuple[str, ...]  # the places named in the text, most mentioned first
    mentions: int


def suggest_regions(text: str) -> list[RegionSuggestion]:
    """Regions whose places the text names, most mentioned first."""
    pattern, owner = _matcher()
    counts: dict[str, dict[str, int]] = {}
    for match in pattern.finditer(text):
        slug, place = owner[match.group(0)]
        per_place = counts.setdefault(slug, {})
        per_place[place] = per_place.get(place, 0) + 1
    suggestions = [
        RegionSuggestion(
            slug=slug,
            places=tuple(sorted(per_place, key=lambda p: (-per_place[p], p))),
            mentions=sum(per_place.values()),
        )
        for slug, per_place in counts.items()
    ]
    suggestions.sort(key=lambda s: (-s.mentions, s.slug))
    return suggestions


# A region mentioned only in passing ("via the Middle East") is not what the
# SITREP is about: keep regions with at least this share of the top count.
MIN_SHARE_OF_TOP = 0.15


def likely_regions(text: str) -> list[str]:
    """The region slugs to tag a new SITREP with: the ones it is about."""
    suggestions = suggest_regions(text)
    if not suggestions:
        return []
    top = suggestions[0].mentions
    floor = max(2, MIN_SHARE_OF_TOP * top) if top >= 2 else 1
    return [s.slug for s in suggestions if s.mentions >= floor]
