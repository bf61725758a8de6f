"""Keyset pagination: one page of a list ordered by id, and the cursors to
the pages beside it.

A cursor is the id of the row a page stops at (the last one for "next",
the first one for "previous"): a page starts right after it in the list's
order. A row inserted or removed between two requests neither repeats nor
skips one (OFFSET would do both), and every page costs one index range
read, however deep it is. The cursor is opaque to clients — they pass back
what they were given — but checked here like any input: a whole number an
id column can hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import sqlalchemy as sa

from dispatch import fields
from dispatch.errors import FieldError

T = TypeVar("T")

MAX_LIMIT = 1000  # rows a page may hold: enough for scripts, bounded for the database


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next: int | None  # pass as ``after`` for the page after this one; None: this is the last
    previous: int | None  # pass as ``before`` for the page before this one; None: this is the first


def parse_cursor(value: str | int | None, *, field: str = "after") -> int | None:
    """A cursor as a client sent it: None (the first page), or an id. Anything
    else is a FieldError naming ``field``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    if text.isascii() and text.isdecimal() and len(text) <= 19 and fields.is_id(int(text)):
        return int(text)
    shown = text if len(text) <= 40 else text[:40] + "…"
    raise FieldError(field, f"{shown!r} is not a cursor from a previous page (a whole number from 1 to {fields.MAX_ID})")


def check_limit(limit: int | None, *, default: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_LIMIT:
        raise FieldError("limit", f"{limit} is not from 1 to {MAX_LIMIT}")
    return limit


def fetch(
    query: sa.Select,
    id_column,
    run: Callable[[sa.Select], Sequence],
    *,
    row_id: Callable[[object], int],
    limit: int,
    after: int | None = None,
    before: int | None = None,
    descending: bool = False,
    exists: Callable[[sa.Select], bool] | None = None,
    sort_key=None,
) -> Page:
    """One page of ``query`` (filters applied, no ORDER BY or LIMIT yet),
    ordered by ``id_column``. ``after``: the page following that id in the
    list's order; ``before``: the page preceding it. ``run`` executes a
    select and returns its rows; ``exists`` answers whether a select (one
    row at most) finds anything, for the cursor on the far side.
    ``sort_key``: an expression in the id's order that no index provides
    (``id + 0``): it keeps a planner from walking the primary key backwards
    in search of rows that a narrow filter's own index finds at once."""
    if after is not None and before is not None:
        raise FieldError("before", "give either after or before, not both")
    forward = before is None
    # "Later in the list" is a lower id when the list is newest first.
    later = (lambda c, v: c < v) if descending else (lambda c, v: c > v)
    earlier = (lambda c, v: c > v) if descending else (lambda c, v: c < v)
    key = id_column if sort_key is None else sort_key
    order = key.desc() if descending == forward else key.asc()
    paged = query
    if after is not None:
        paged = paged.where(later(id_column, after))
    if before is not None:
        paged = paged.where(earlier(id_column, before))
    rows = list(run(paged.order_by(order).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if not forward:
        rows.reverse()
    if not rows:
        return Page(items=[], next=None, previous=None)
    first, last = row_id(rows[0]), row_id(rows[-1])
    probe = exists or (lambda q: bool(run(q)))
    if forward:
        has_next = more
        has_previous = after is not None and probe(query.where(earlier(id_column, first)).limit(1))
    else:
        has_previous = more
        has_next = probe(query.where(later(id_column, last)).limit(1))
    return Page(items=rows, next=last if has_next else None, previous=first if has_previous else None)


def prefix_range(column, prefix: str):
    """``column`` starts with ``prefix``, as a range an index can read:
    prefix ≤ column < the first text after every text with that prefix, in
    code-point order (the column must compare that way: SQLite's BINARY, or
    COLLATE "C" on PostgreSQL)."""
    return sa.and_(column >= prefix, column < _after_prefix(prefix))


def _after_prefix(prefix: str) -> str:
    text = prefix
    while text:
        code = ord(text[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:  # no text holds a lone surrogate: skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            return text[:-1] + chr(code)
        text = text[:-1]
    return "\U0010ffff" * 2  # a prefix of only U+10FFFF: every text after it
