"""What a stored value may be: the lengths, characters and number ranges
every column accepts, checked the same way whichever database is behind it.

SQLite stores a 600-character title in a VARCHAR(500), a NUL, any integer up
to 2^63; PostgreSQL refuses them with an error the caller cannot explain.
So the limits come from the table metadata itself (a String column's length,
an Integer column's width), and ``check_object`` holds every new or changed
row to them before it is flushed: one check, whatever the entry point
(CLI, CSV, form, API). A refusal is a FieldError naming the field.

Text rules:
- one-line columns (String) take no control characters but tab, and no
  Unicode line or paragraph separators: such a value ends up in a header, a
  Slack line or a CSV cell, where a line break forges structure;
- long-text columns (Text, or info={"multiline": True}) also take CR and LF;
- no column takes a lone surrogate (what a non-UTF-8 byte in a file name or
  argument becomes): it cannot be encoded, so it cannot be stored.

Also here: text that names a row (an id, an instant, a day) checked before
it reaches a query, since a query parameter that no column could hold makes
the database fail, not answer "not found".

Imports nothing of ours but the errors.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from dispatch.errors import FieldError

INT_BITS = {sa.SmallInteger: 16, sa.BigInteger: 64}
DEFAULT_INT_BITS = 32  # sa.Integer is INTEGER: four bytes on PostgreSQL
MAX_ID = 2**31 - 1  # every id column is an INTEGER

# C0 controls but tab, DEL, C1 controls, the Unicode line and paragraph
# separators, lone surrogates: one character class, so one linear scan.
_LINE_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: str, *, max_length: int | None = None, multiline: bool = False) -> str | None:
    """Why ``value`` cannot be stored in such a column, or None."""
    if max_length is not None and len(value) > max_length:
        return f"at most {max_length:,} characters (this one has {len(value):,})"
    bad = (_TEXT_FORBIDDEN if multiline else _LINE_FORBIDDEN).search(value)
    if bad is None:
        return None
    char = bad.group(0)
    if "\ud800" <= char <= "\udfff":
        return "is not valid text (it holds bytes that are not UTF-8)"
    if char in "\r\n\u2028\u2029":
        return "must be one line (it holds a line break)"
    return f"must not contain control characters (U+{ord(char):04X} at position {bad.start() + 1})"


def check_text(field: str, value: str, *, max_length: int | None = None, multiline: bool = False) -> str:
    problem = text_problem(value, max_length=max_length, multiline=multiline)
    if problem is not None:
        raise FieldError(field, problem)
    return value


def int_problem(value: int, *, bits: int = DEFAULT_INT_BITS) -> str | None:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if not low <= value <= high:
        return f"must be between {low:,} and {high:,}"
    return None


def clip_line(text: str, max_length: int, *, marker: str = " …") -> str:
    """Text we write ourselves from something outside (a server's reply, a
    reason) made storable in a one-line column: controls become spaces, runs
    of white space one space, and what is too long is cut with a marker."""
    text = " ".join(_LINE_FORBIDDEN.sub(" ", text).split())
    if len(text) > max_length:
        text = text[: max_length - len(marker)].rstrip() + marker
    return text


# --- rows: the column rules, read from the table metadata ---------------------

def _base_type(column_type):
    return column_type.impl if isinstance(column_type, TypeDecorator) else column_type


def _column_check(column: sa.Column):
    """A function value -> problem-or-None for this column, or None if the
    column's values need no check (enums, booleans, dates)."""
    kind = _base_type(column.type)
    if isinstance(kind, sa.Enum) or isinstance(kind, sa.Boolean):
        return None
    if isinstance(kind, sa.String):
        multiline = column.info.get("multiline", isinstance(kind, sa.Text))
        length = kind.length

        def text(value):
            return text_problem(value, max_length=length, multiline=multiline) if isinstance(value, str) else None
        return text
    if isinstance(kind, sa.Integer):
        bits = next((b for t, b in INT_BITS.items() if isinstance(kind, t)), DEFAULT_INT_BITS)

        def integer(value):
            return int_problem(value, bits=bits) if isinstance(value, int) else None
        return integer
    if isinstance(kind, sa.JSON):
        multiline = column.info.get("multiline", False)

        def items(value):
            for item in value if isinstance(value, (list, tuple)) else ():
                problem = text_problem(item, multiline=multiline) if isinstance(item, str) else (
                    int_problem(item, bits=64) if isinstance(item, int) else None)
                if problem is not None:
                    return problem
            return None
        return items
    if isinstance(kind, sa.DateTime):
        return instant_problem
    return None


_checks: dict[Any, tuple[tuple[str, str, Any], ...]] = {}


def _mapper_checks(mapper) -> tuple[tuple[str, str, Any], ...]:
    """(attribute, field name, check) for every checked column of a mapped class."""
    found = _checks.get(mapper)
    if found is None:
        found = []
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            check = _column_check(column)
            if check is not None:
                found.append((prop.key, column.info.get("field", prop.key), check))
        found = _checks[mapper] = tuple(found)
    return found


def check_object(obj: Any, *, changed_only: bool = False) -> None:
    """Hold a mapped object's values to its columns' rules; with
    ``changed_only``, only the attributes changed since it was loaded (a
    row stored before a rule existed stays editable in its other fields)."""
    state = sa.inspect(obj)
    values = state.dict
    for key, field, check in _mapper_checks(state.mapper):
        if changed_only:
            added = state.attrs[key].history.added
            if not added:
                continue
            value = added[0]
        else:
            value = values.get(key)
        if value is not None:
            problem = check(value)
            if problem is not None:
                raise FieldError(field, problem)


def check_values(model: type, values: dict[str, Any], *, only: tuple[str, ...] | None = None) -> None:
    """Hold values meant for a mapped class's attributes to their columns'
    rules before they are set (other keys, like relationships, pass).
    ``only``: just these attributes (a bulk import checks a row's own ones)."""
    checks = _mapper_checks(sa.inspect(model)) if only is None else _some_checks(model, only)
    for key, field, check in checks:
        value = values.get(key)
        if value is not None:
            problem = check(value)
            if problem is not None:
                raise FieldError(field, problem)


_some: dict[tuple, tuple[tuple[str, str, Any], ...]] = {}


def _some_checks(model: type, only: tuple[str, ...]) -> tuple[tuple[str, str, Any], ...]:
    found = _some.get((model, only))
    if found is None:
        found = _some[model, only] = tuple(c for c in _mapper_checks(sa.inspect(model)) if c[0] in only)
    return found


def check_flush(session, _flush_context=None, _instances=None) -> None:
    """A ``before_flush`` hook: nothing that a column cannot hold reaches the database."""
    for obj in session.new:
        check_object(obj)
    for obj in session.dirty:
        if obj not in session.deleted:
            check_object(obj, changed_only=True)


# --- values that name rows: checked before they reach a query ----------------

def parse_id(text: str | int, *, field: str = "id") -> int:
    """An id as typed: ASCII digits only ('²'.isdigit() is true, int('²')
    fails), and in the range an id column holds."""
    if isinstance(text, int):
        value = text
    else:
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdecimal()):
            raise FieldError(field, f"{text[:40]!r} is not a number")
        # Ten digits hold every id; more are not worth converting.
        value = int(stripped) if len(stripped) <= 10 else MAX_ID + 1
    if not 1 <= value <= MAX_ID:
        raise FieldError(field, f"{str(text).strip()[:40]} is not an id (ids run from 1 to {MAX_ID:,})")
    return value


def is_id(value: int) -> bool:
    return isinstance(value, int) and 1 <= value <= MAX_ID


LIKE_ESCAPE = "\\"


def contains_pattern(search: str, *, field: str = "search", max_length: int = 200) -> str:
    """A LIKE pattern for "contains this text": % and _ in the search are
    literal characters, not wildcards (escaped with LIKE_ESCAPE, which the
    query must name: ``ilike(pattern, escape=LIKE_ESCAPE)``)."""
    check_text(field, search, max_length=max_length)
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def instant_problem(moment: datetime) -> str | None:
    if not isinstance(moment, datetime):
        return None
    try:
        (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (OverflowError, ValueError):
        return f"{moment.isoformat()} is outside the years 1–9999 in UTC"
    return None


def utc_instant(moment: datetime, *, field: str) -> datetime:
    """An instant in UTC (one without an offset is taken as UTC). Refuses,
    naming the field, one that falls outside the years 1–9999 once in UTC
    (0001-01-01T00:00+14:00 does), which neither Python nor a database holds."""
    problem = instant_problem(moment)
    if problem is not None:
        raise FieldError(field, problem)
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc)


# A moment to act at (plan, send, preview) lies well inside the calendar:
# the windows around it, a week either side, must be dates as well.
EARLIEST_MOMENT = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_MOMENT = datetime(9000, 1, 1, tzinfo=timezone.utc)


def parse_instant(text: str, *, field: str, default_zone=timezone.utc, to_act_at: bool = False) -> datetime:
    """ISO-8601 text as an instant in UTC; without an offset it is in
    ``default_zone``. ``to_act_at``: a moment to plan or preview at, so
    within EARLIEST_MOMENT–LATEST_MOMENT."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FieldError(field, f"{text[:40]!r} is not an ISO-8601 date and time "
                                "(e.g. 2026-11-28T07:05:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_zone)
    moment = utc_instant(parsed, field=field)
    if to_act_at and not EARLIEST_MOMENT <= moment < LATEST_MOMENT:
        raise FieldError(field, f"{text.strip()[:40]} is not a moment to act at "
                                f"(between {EARLIEST_MOMENT.year} and {LATEST_MOMENT.year})")
    return moment


def parse_day(text: str, *, field: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise FieldError(field, f"{text[:40]!r} is not a date as YYYY-MM-DD") from None


def day_bounds(day: date) -> tuple[datetime, datetime | None]:
    """The UTC instants [start, end) of a day; the last day Python knows has no end."""
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    try:
        return start, start + timedelta(days=1)
    except OverflowError:
        return start, None
