"""Read the SITREP text format into a draft. Pure: text in, value out.

The format, as analysts write it::

    Geopolitical Insights                      (optional publication line)
    Academy SITREP – Title of the report       (the prefix up to the dash is dropped)
    September 12, 2023                         (the event date)
    What has Happened:
      • a bullet, possibly wrapped
        over several lines
    Why it Matters:
    “A quote, with or without quotation marks.”
    - General Firstname Lastname               (the analyst who said it)

"Why it Matters" may be missing, and so may the publication line.

Every pattern here sees text from outside, so each runs in linear time on any
input (see dispatch/input_bounds.py): a line is stripped before it is matched
and patterns carry no surrounding ``\\s*``, and no line is longer than
MAX_LINE_CHARS.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime

from dispatch.errors import SitrepFormatError

MAX_SOURCE_BYTES = 1_000_000
# A wrapped paragraph is a few hundred characters; one unwrapped is a few
# thousand. Longer lines are refused before any pattern reads them.
MAX_LINE_CHARS = 10_000

# Each is matched against a stripped line (fullmatch for the headings): a
# "\s*:?\s*$" at the end, as these once had, splits a run of n spaces n ways
# on each of n starts, which is quadratic.
HAPPENED_HEADING = re.compile(r"what\s+has\s+happened\s*:?", re.IGNORECASE)
MATTERS_HEADING = re.compile(r"why\s+it\s+matters\s*:?", re.IGNORECASE)
# "Academy SITREP – Title", "SITREP: Title", "Weekly SITREP - Title" (searched: the first such "SITREP").
SITREP_PREFIX = re.compile(r"\bSITREP\b\s*[–—:\-]\s*(?P<title>.+)", re.IGNORECASE)
BULLET = re.compile(r"[•*\-–—·▪●◦‣]\s+(?P<text>.*)")  # on the line without its indent
ATTRIBUTION = re.compile(r"[-–—]{1,2}\s*(?P<who>\S.*)")  # on the stripped line
MAX_ATTRIBUTION_WORDS = 10

OPENING_QUOTES = "\"“„«‘'"
CLOSING_QUOTES = "\"”“»’'"

DATE_FORMATS = ("%B %d, %Y", "%B %d %Y", "%b %d, %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y",
                "%Y-%m-%d", "%A, %B %d, %Y", "%A %B %d, %Y", "%A, %d %B %Y")

# Ranks and honorifics that come before an analyst's name in an attribution.
HONORIFICS = (
    "Lieutenant General", "Lt. Gen.", "Lt Gen", "Major General", "Maj. Gen.", "Maj Gen",
    "Brigadier General", "Brig. Gen.", "Brig Gen", "General", "Gen.", "Gen",
    "Vice Admiral", "Vice Adm.", "Rear Admiral", "Rear Adm.", "Admiral", "Adm.",
    "Lieutenant Colonel", "Lt. Col.", "Colonel", "Col.", "Major", "Maj.", "Captain", "Capt.",
    "Ambassador", "Amb.", "Professor", "Prof.", "Doctor", "Dr.", "Dr", "Secretary",
    "Senator", "Sen.", "Governor", "Gov.", "Director", "Mr.", "Ms.", "Mrs.", "Sir", "Dame",
)


@dataclass(frozen=True)
class Quote:
    analyst_name: str
    analyst_title: str | None
    text: str

    @property
    def analyst_slug(self) -> str:
        return slugify(self.analyst_name)


@dataclass(frozen=True)
class ParsedSitrep:
    title: str
    event_date: date
    summary: list[str]
    commentary: list[Quote] = field(default_factory=list)
    publication: str | None = None
    source_text: str = ""

    @property
    def fingerprint(self) -> str:
        return sitrep_fingerprint(self.title, self.event_date)


def sitrep_fingerprint(title: str, event_date: date) -> str:
    """Same title (ignoring case, spacing and punctuation) and date: same SITREP."""
    key = " ".join(re.findall(r"\w+", title.casefold())) + "|" + event_date.isoformat()
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", _ascii_letters(text).lower()).strip("-")
    return slug or hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _ascii_letters(text: str) -> str:
    """NFKD, keeping the ASCII characters: "Émile Ñuñez" -> "Emile Nunez".

    Decomposed one character at a time: NFKD of a whole string re-sorts each
    run of combining marks by insertion sort, which is quadratic on
    "\\u0301\\u0316" * n. The re-sorting only moves combining marks, which are
    never ASCII and are dropped here, so the result is the same."""
    return "".join([unicodedata.normalize("NFKD", ch) for ch in text]).encode("ascii", "ignore").decode("ascii")


def decode_source(raw: bytes, *, source: str | None = None) -> str:
    """Bytes from a file or an upload to text; refuse what is not a text file."""
    if not raw.strip():
        raise SitrepFormatError("the file is empty", source=source)
    if len(raw) > MAX_SOURCE_BYTES:
        raise SitrepFormatError(
            f"the file is larger than {MAX_SOURCE_BYTES:,} bytes, the most a SITREP may be", source=source
        )
    if b"\x00" in raw:
        raise SitrepFormatError("this is a binary file, not SITREP text", source=source)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        # Text saved by older Windows editors; cp1252 leaves a few bytes undefined.
        return raw.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise SitrepFormatError(
            "this is not UTF-8 text (binary file?)", source=source
        ) from exc


def parse(text: str, *, source: str | None = None) -> ParsedSitrep:
    """Parse SITREP text; raise SitrepFormatError naming the first problem."""
    if len(text) > MAX_SOURCE_BYTES:
        raise SitrepFormatError(
            f"the text is {len(text):,} characters; a SITREP is at most {MAX_SOURCE_BYTES:,}", source=source
        )
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    if not text.strip():
        raise SitrepFormatError("the file is empty", source=source)
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            raise SitrepFormatError(
                f"the line is {len(line):,} characters long; a line is at most {MAX_LINE_CHARS:,} "
                "(break a long paragraph into lines)",
                source=source,
                line=number,
            )

    happened = _find(lines, HAPPENED_HEADING)
    if happened is None:
        raise SitrepFormatError("no 'What has Happened:' section", source=source)
    matters = _find(lines, MATTERS_HEADING, start=happened + 1)

    publication, title, event_date = _parse_header(lines[:happened], source=source)
    bullet_lines = lines[happened + 1 : matters if matters is not None else len(lines)]
    summary = _parse_bullets(bullet_lines)
    if not summary:
        raise SitrepFormatError(
            "the 'What has Happened' section has no bullets", source=source, line=happened + 1
        )
    commentary: list[Quote] = []
    if matters is not None:
        commentary = _parse_commentary(lines[matters + 1 :], first_line=matters + 2, source=source)
    return ParsedSitrep(
        title=title,
        event_date=event_date,
        summary=summary,
        commentary=commentary,
        publication=publication,
        source_text=text.strip("\n") + "\n",
    )


def _find(lines: list[str], pattern: re.Pattern[str], *, start: int = 0) -> int | None:
    for index in range(start, len(lines)):
        if pattern.fullmatch(lines[index].strip()):
            return index
    return None


def _parse_header(lines: list[str], *, source: str | None) -> tuple[str | None, str, date]:
    numbered = [(n + 1, line.strip()) for n, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise SitrepFormatError("no title and no date before 'What has Happened:'", source=source)
    date_line_no, date_line = numbered[-1]
    event_date = parse_date(date_line)
    if event_date is None:
        if len(numbered) == 1 or not re.search(r"\d", date_line):
            raise SitrepFormatError(
                "no date line before 'What has Happened:' (e.g. 'September 12, 2023')",
                source=source,
            )
        raise SitrepFormatError(
            f"cannot read the date {date_line!r} (write e.g. 'September 12, 2023' or '2023-09-12')",
            source=source,
            line=date_line_no,
        )
    rest = [line for _, line in numbered[:-1]]
    if not rest:
        raise SitrepFormatError("no title before the date", source=source, line=date_line_no)
    title_index = next((i for i, line in enumerate(rest) if SITREP_PREFIX.search(line)), len(rest) - 1)
    match = SITREP_PREFIX.search(rest[title_index])
    title = (match.group("title") if match else rest[title_index]).strip()
    if not title:
        raise SitrepFormatError("the title is empty", source=source)
    publication = " / ".join(rest[:title_index]) or None
    return publication, title, event_date


def parse_date(text: str) -> date | None:
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.strip())
    cleaned = re.sub(r"\bSept\b", "Sep", cleaned.replace(".", ""))
    cleaned = re.sub(r"\s+", " ", cleaned)
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
    return None


def _parse_bullets(lines: list[str]) -> list[str]:
    """Bullets start with a marker; an unmarked line continues the bullet
    above it, unless a blank line came between (then it is a new item)."""
    items: list[list[str]] = []
    previous_blank = True
    for line in lines:
        if not line.strip():
            previous_blank = True
            continue
        marker = BULLET.match(line.lstrip())
        if marker:
            items.append([marker.group("text").strip()])
        elif items and not previous_blank:
            items[-1].append(line.strip())
        else:
            items.append([line.strip()])
        previous_blank = False
    return [joined for joined in (" ".join(part for part in item if part) for item in items) if joined]


def _parse_commentary(lines: list[str], *, first_line: int, source: str | None) -> list[Quote]:
    quotes: list[Quote] = []
    paragraphs: list[list[str]] = []
    start_line: int | None = None
    for offset, line in enumerate(lines):
        stripped = line.strip()
        attribution = ATTRIBUTION.match(stripped)
        if attribution and len(attribution.group("who").split()) <= MAX_ATTRIBUTION_WORDS and paragraphs:
            name, title = split_attribution(attribution.group("who"))
            text = _strip_outer_quotes("\n\n".join(" ".join(p) for p in paragraphs if p))
            if text:
                quotes.append(Quote(analyst_name=name, analyst_title=title, text=text))
            paragraphs, start_line = [], None
            continue
        if not stripped:
            if paragraphs and paragraphs[-1]:
                paragraphs.append([])
            continue
        if start_line is None:
            start_line = first_line + offset
        if not paragraphs:
            paragraphs.append([])
        paragraphs[-1].append(stripped)
    if any(paragraphs):
        raise SitrepFormatError(
            "commentary without an analyst: end each quote with a line '- Analyst Name'",
            source=source,
            line=start_line,
        )
    return quotes


def _strip_outer_quotes(text: str) -> str:
    text = text.strip()
    if text and text[0] in OPENING_QUOTES:
        text = text[1:]
        if text and text[-1] in CLOSING_QUOTES:
            text = text[:-1]
    return text.strip()


def split_attribution(who: str) -> tuple[str, str | None]:
    """'General Robert Walsh, USMC (Ret.)' -> ('Robert Walsh', 'General')."""
    who = _without_parentheses(who)
    who = who.split(",", 1)[0].strip()
    for honorific in HONORIFICS:
        if who.startswith(honorific + " "):
            return who[len(honorific) :].strip(), honorific
    return who, None


def _without_parentheses(text: str) -> str:
    """Each "(…)" within a line removed, as ``re.sub(r"\\(.*?\\)", "", text)``
    did, in one pass. That pattern, tried at every "(", scanned the rest of
    the line for a ")" each time: quadratic in the number of unclosed "("."""
    return "\n".join(_without_parentheses_in_line(line) for line in text.split("\n"))


def _without_parentheses_in_line(line: str) -> str:
    kept: list[str] = []
    start = 0
    while (opening := line.find("(", start)) >= 0:
        closing = line.find(")", opening + 1)
        if closing < 0:
            break  # no ")" after this "(", so none after any later "(" either
        kept.append(line[start:opening])
        start = closing + 1
    kept.append(line[start:])
    return "".join(kept)
