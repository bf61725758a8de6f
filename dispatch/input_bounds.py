"""How text from outside is read: bounded first, then matched in linear time.

Anyone can send text to dispatch (the subscribe form, signed-link pages, the
API, uploaded SITREPs, CSV files). Python's ``re`` backtracks and never lets
go of the interpreter lock while it matches, so one pattern that is
quadratic on some input (``re.sub(r"\\(.*?\\)", ...)`` over 40,000 "(" took
12 s) stops every other request for that long. The rule, held by
tests/test_linear_time.py for every parser and field check:

1. **Bound the input before any pattern sees it**: a field to what its column
   holds (``bounded`` below), a SITREP line to ``sitrep_text.MAX_LINE_CHARS``.
   An error then also never quotes a megabyte back.
2. **Write patterns that cannot backtrack**: strip the text first and match
   without a surrounding ``\\s*`` (``\\s*:?\\s*$`` splits a run of n spaces n
   ways, n times over); never put two quantified parts that can match the
   same character side by side; never search with a lazy ``.*?`` for a
   closing character (each unclosed opener rescans the rest of the line): use
   ``str.find`` in one pass instead. An alternation of literals (the
   place-name matcher) is linear, and is built as a trie so that its
   constant stays small too.
3. **Other super-linear text work counts too**: ``unicodedata.normalize``
   re-sorts a run of combining marks by insertion sort (quadratic on
   "\\u0301\\u0316" * n), so ``slugify`` decomposes one character at a
   time; ``int()`` of a long digit string is quadratic (and raises past 4,300
   digits), so it only sees a bounded field.

Why not a linear-time engine (google-re2) instead: its ``\\s``, ``\\w`` and
``\\d`` are ASCII-only, while SITREPs are Unicode text (no-break spaces, em
dashes, accented names) whose parsing must not change; it has no
lookbehind, which the place-name matcher needs ("U.S." not inside
"U.S.A."); and it is a native dependency. With the rules above the standard
engine is linear on every pattern we have, and the tests keep it so.
"""

from __future__ import annotations

from dispatch.errors import FieldError


def bounded(value: str, *, field: str, limit: int) -> str:
    """The value itself if it has at most ``limit`` characters, else a
    FieldError naming the field (without quoting the value back)."""
    if len(value) > limit:
        raise FieldError(field, f"at most {limit:,} characters (this one has {len(value):,})")
    return value
