"""EmailContent → the bytes of an RFC 5322 message, with the headers that
mail providers expect of a newsletter.

Built by hand rather than with ``email.message.EmailMessage``: the stdlib
builder parses and refolds every header and costs about 3 ms a message,
ten times the wire. Here parts go as 8bit UTF-8 where the server allows it
(else quoted-printable, in C), headers are simple and pre-checked, and what
is the same for a whole list (From, an encoded Subject) is worked out once.
Readers who share a rendered body (``render.PersonalisedEmail``) share its
bytes too: each part is encoded once per body, and only the reader's values
are spliced in; the result is byte for byte what the general path builds.
The same goes for SMTP's dot-stuffing (``stuffed=True``): the shared parts
are stuffed once per body, not 17 KB scanned again for every reader.
The stdlib parser reads the result back in the tests.

Every header is built from checked values: the subject passes through
``render.one_line``; the From comes from settings checked at start; the To is
a validated address and is refused if it holds CR or LF. A CR or LF can
never start a new header.
"""

from __future__ import annotations

import binascii
import hashlib
import secrets
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import cached_property, lru_cache
from urllib.parse import quote

from dispatch import links
from dispatch.render import EmailContent, PersonalisedEmail, one_line

CRLF = "\r\n"


def message_id(delivery_id: int, domain: str, *, installation: str = "") -> str:
    """Deterministic per delivery, so a resend after a crash can be told;
    with the installation's random part (``bootstrap.installation_id``), so
    that a rebuilt database or a second installation sending from the same
    domain never repeats an id a mailbox already holds (Gmail may drop the
    newcomer as a duplicate). The part after the dot is a keyed hash of the
    delivery, not the installation's value itself: every reader sees their
    Message-ID, and a bounce or complaint that names one must not be
    forgeable for another reader's delivery (dispatch.inbound.inbox)."""
    suffix = f".{delivery_tag(installation, delivery_id)}" if installation else ""
    return f"<delivery-{delivery_id}{suffix}@{domain}>"


DELIVERY_TAG_CHARS = 16  # 80 bits of HMAC, lower-case base32 (some systems fold case)


@lru_cache(maxsize=4096)
def delivery_tag(installation: str, delivery_id: int) -> str:
    mac = _installation_mac(installation).digest(b"dispatch message-id %d" % int(delivery_id))
    # Base32 turns each 5 bytes into 8 characters on their own: the first 10
    # bytes (80 bits) are the first 16 characters, two at a time from a table.
    bits = int.from_bytes(mac[:DELIVERY_TAG_CHARS * 5 // 8], "big")
    return "".join([_BASE32_PAIRS[(bits >> shift) & 0x3FF] for shift in range(70, -1, -10)])


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648's alphabet, lower case
_BASE32_PAIRS = [a + b for a in _BASE32 for b in _BASE32]


@lru_cache(maxsize=4)
def _installation_mac(installation: str) -> links.KeyedHmac:
    return links.KeyedHmac(installation.encode("ascii"), hashlib.sha256)


@lru_cache(maxsize=4)
def _utc_date_header(second: int) -> str:
    return format_datetime(datetime.fromtimestamp(second, timezone.utc))


def date_header(date: datetime) -> str:
    """``format_datetime(date)`` (seconds, no fraction), worked out once a
    second for UTC: every message of that second carries the same Date."""
    if date.tzinfo is not timezone.utc:
        return format_datetime(date)
    return _utc_date_header(int(date.timestamp()))


@lru_cache(maxsize=1024)
def encode_subject(subject: str) -> str:
    subject = one_line(subject)
    if subject.isascii() and len(subject) <= 900:
        return subject
    return Header(subject, "utf-8", header_name="Subject").encode(linesep=CRLF)


@lru_cache(maxsize=64)
def encode_address(value: str) -> str:
    """'Name <addr>' with a non-ASCII name RFC 2047-encoded."""
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8") if name else address


@lru_cache(maxsize=64)
def _quoted(text: str) -> str:
    return quote(text)


def _quoted_subject(unsubscribe_url: str) -> str:
    """``quote("unsubscribe " + url)``: percent-encoding goes character by
    character, so the part every reader shares (up to the token) is quoted
    once."""
    head, slash, token = unsubscribe_url.rpartition("/")
    return _quoted(f"unsubscribe {head}{slash}") + quote(token)


def dot_stuffed(data: bytes) -> bytes:
    """SMTP's transparency (RFC 5321 4.5.2): every line of the data that
    starts with "." gets one more (``data`` has CRLF line ends; the final
    "." line is the sender's to add)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


MAX_8BIT_LINE = 990  # 8bit allows 998 octets a line; keep a margin

# The multipart boundary must never occur in the parts. 8bit parts carry
# SITREP text as it is, and a title can be any line; a boundary derived from
# the Message-ID alone could be computed and written into a SITREP by anyone
# who knows the scheme. Keyed with a secret made at start, it stays the same
# for one message (both build paths give the same bytes) and cannot be
# predicted from outside the process.
_BOUNDARY_KEY = secrets.token_bytes(16)


def boundary_for(msg_id: str) -> str:
    return "=_dispatch_" + hashlib.blake2b(msg_id.encode(), key=_BOUNDARY_KEY, digest_size=12).hexdigest()


def _part_head(subtype: str, encoding: str) -> bytes:
    return (f"Content-Type: text/{subtype}; charset=utf-8{CRLF}"
            f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}").encode("ascii")


def _part(subtype: str, text: str, *, eight_bit: bool) -> bytes:
    """One text part: raw UTF-8 ("8bit") when the server takes 8BITMIME and
    no line is too long, which costs nothing to build; else quoted-printable."""
    raw = text.replace("\r\n", "\n").encode("utf-8")
    if eight_bit and max(map(len, raw.split(b"\n"))) <= MAX_8BIT_LINE:
        encoding, body = "8bit", raw
    else:
        encoding, body = "quoted-printable", binascii.b2a_qp(raw, istext=True)
    return _part_head(subtype, encoding) + body.replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class _SharedPart:
    """A shared body's text or HTML as 8bit bytes, made once for the group:
    literal pieces in UTF-8 with CRLF line ends, the names of the personal
    values between them, and what the 8bit line limit needs to know."""

    pieces: tuple  # bytes, field name, bytes, …, bytes
    longest_fixed_line: int  # among lines that hold no personal value
    value_lines: tuple[tuple[int, tuple[str, ...]], ...]  # (fixed octets, names) of each line that does
    # ``pieces`` as they go on the wire after the part's head (which ends a
    # line): each literal dot-stuffed, and the first given its extra "." if
    # it starts a line with one. What joins them needs no more, because a
    # spliced value is never empty and holds no CR or LF (``_eight_bit_parts``):
    # a "\r\n." can cross from a literal into a value only where the value
    # starts a line, and never from a value into the literal after it.
    stuffed: tuple = ()
    line_starts: tuple[int, ...] = ()  # the indexes in ``pieces`` of values that start a line

    @classmethod
    def of(cls, pieces: tuple[str, ...]) -> _SharedPart:
        literals = [p.replace("\r\n", "\n").encode("utf-8") for p in pieces[0::2]]
        names = pieces[1::2]
        longest, value_lines = 0, []
        length, on_line = 0, []  # the line being read: fixed octets so far, names on it
        for index, literal in enumerate(literals):
            lines = literal.split(b"\n")
            for line in lines[:-1]:  # each ends at a newline
                length += len(line)
                if on_line:
                    value_lines.append((length, tuple(on_line)))
                else:
                    longest = max(longest, length)
                length, on_line = 0, []
            length += len(lines[-1])
            if index < len(names):
                on_line.append(names[index])
        if on_line:
            value_lines.append((length, tuple(on_line)))
        else:
            longest = max(longest, length)
        crlf = [literal.replace(b"\n", b"\r\n") for literal in literals]
        joined: list = [None] * len(pieces)
        joined[0::2], joined[1::2] = crlf, names
        stuffed = list(joined)
        stuffed[0::2] = [literal.replace(b"\r\n.", b"\r\n..") for literal in crlf]
        if crlf[0].startswith(b"."):  # the part's head ends a line
            stuffed[0] = b"." + stuffed[0]
        # A value starts a line after a literal that ends one, or first in the
        # part (after its head); after an empty literal, the value before it ends no line.
        line_starts = tuple(2 * index + 1 for index, literal in enumerate(crlf[:-1])
                            if literal.endswith(b"\r\n") or (index == 0 and not literal))
        return cls(tuple(joined), longest, tuple(value_lines), tuple(stuffed), line_starts)

    def fits(self, values: dict[str, bytes]) -> bool:
        if self.longest_fixed_line > MAX_8BIT_LINE:
            return False
        # Most values are short: bounded by the longest one, every line fits, and none is added up.
        if self.widest_value_line + self.most_values_on_a_line * max(map(len, values.values())) <= MAX_8BIT_LINE:
            return True
        return all(fixed + sum(len(values[name]) for name in names) <= MAX_8BIT_LINE
                   for fixed, names in self.value_lines)

    @cached_property
    def widest_value_line(self) -> int:
        return max((fixed for fixed, _ in self.value_lines), default=0)

    @cached_property
    def most_values_on_a_line(self) -> int:
        return max((len(names) for _, names in self.value_lines), default=0)


_shared_parts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # lives as long as the shared body


def _eight_bit_parts(content: PersonalisedEmail, *,
                     stuffed: bool = False) -> tuple[list[bytes], list[bytes] | None] | None:
    """The parts' 8bit bodies as pieces to join (``stuffed``: dot-stuffed as
    they follow their part heads), spliced from bytes encoded once per
    shared body; None when only the general path gives the right bytes (a
    value that is empty or holds a line end, or a line too long for 8bit)."""
    shared = content.shared
    parts = _shared_parts.get(shared)
    if parts is None:
        parts = _shared_parts.setdefault(shared, (
            _SharedPart.of(shared.text_pieces),
            _SharedPart.of(shared.html_pieces) if shared.html_pieces is not None else None))
    text_part, html_part = parts
    # Checked on the text values alone: escaping them for HTML never empties
    # one nor adds a line end. (On str: ``b"\n" in some_bytes`` first tries
    # the needle as an integer, and raising that TypeError costs more than the search.)
    for value in content.text_values.values():
        if not value or "\n" in value or "\r" in value:
            return None
    bodies = []
    for part, values in ((text_part, content.text_values), (html_part, content.html_values)):
        if part is None:
            bodies.append(None)
            continue
        encoded = {name: value.encode("utf-8") for name, value in values.items()}
        if not part.fits(encoded):
            return None
        bodies.append(_stuffed_fill(part, encoded) if stuffed else _filled(part.pieces, encoded))
    return bodies[0], bodies[1]


def _filled(pieces: tuple, values: dict) -> list:
    """``fill`` not yet joined: the message is joined once, whole."""
    joined = list(pieces)
    joined[1::2] = [values[name] for name in pieces[1::2]]
    return joined


def _stuffed_fill(part: _SharedPart, values: dict) -> list:
    """``_filled`` of the part's stuffed pieces: a value that starts a line with "." gets one more."""
    joined = _filled(part.stuffed, values)
    for index in part.line_starts:
        if joined[index].startswith(b"."):
            joined[index] = b"." + joined[index]
    return joined


_PART_HEADS = {(subtype, encoding): _part_head(subtype, encoding)
               for subtype in ("plain", "html") for encoding in ("8bit", "quoted-printable")}


def _bodies(content, *, eight_bit: bool, stuffed: bool = False) -> tuple[list[bytes], list[bytes] | None]:
    """The text part and the HTML part (None for a plain-text reader), each
    with its part headers, as pieces to join; ``stuffed``: each part dot-stuffed."""
    if eight_bit and isinstance(content, PersonalisedEmail):
        spliced = _eight_bit_parts(content, stuffed=stuffed)
        if spliced is not None:
            text, html = spliced
            return ([_PART_HEADS["plain", "8bit"], *text],
                    [_PART_HEADS["html", "8bit"], *html] if html is not None else None)
    stuff = dot_stuffed if stuffed else _as_is
    return ([stuff(_part("plain", content.text, eight_bit=eight_bit))],
            [stuff(_part("html", content.html, eight_bit=eight_bit))] if content.html is not None else None)


def _as_is(data: bytes) -> bytes:
    return data


def build_message(
    content: EmailContent | PersonalisedEmail,
    *,
    sender: str,
    to: str,
    msg_id: str,
    list_id: str,
    unsubscribe_mailto: str,
    date: datetime,
    reply_to: str | None = None,
    eight_bit: bool = False,
    stuffed: bool = False,
) -> bytes:
    """The message's bytes; ``stuffed``: as SMTP's DATA carries them,
    ``dot_stuffed(build_message(...))`` (without the final "." line).

    The message is joined from pieces (the head, the multipart delimiters,
    each part) that start with neither "." nor LF, so no "\r\n." runs
    across two of them: stuffing each on its own stuffs the whole."""
    if "\r" in to or "\n" in to or not msg_id.startswith("<"):
        raise ValueError(f"refusing to build a header from {to!r}")
    mailto = f"mailto:{unsubscribe_mailto}?subject={_quoted_subject(content.unsubscribe_url)}"
    reply = f"Reply-To: {encode_address(reply_to)}{CRLF}" if reply_to else ""
    head = (f"From: {encode_address(sender)}{CRLF}To: {to}{CRLF}{reply}"
            f"Subject: {encode_subject(content.subject)}{CRLF}Date: {date_header(date)}{CRLF}"
            f"Message-ID: {msg_id}{CRLF}List-Id: {list_id}{CRLF}"
            f"List-Unsubscribe: <{content.unsubscribe_url}>,{CRLF} <{mailto}>{CRLF}"
            f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}MIME-Version: 1.0{CRLF}")
    text, html = _bodies(content, eight_bit=eight_bit, stuffed=stuffed)
    if html is None:
        return b"".join([_head_bytes(head, stuffed), *text])
    # "=_" never starts a line of quoted-printable text ("=" is encoded), and
    # 8bit text cannot hold a boundary keyed with a secret it never saw.
    boundary = boundary_for(msg_id)
    head += (f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"{CRLF}{CRLF}'
             f"This is a multi-part message in MIME format.")
    delimiter = f"{CRLF}--{boundary}{CRLF}".encode("ascii")
    return b"".join([_head_bytes(head, stuffed), delimiter, *text, delimiter, *html,
                     f"{CRLF}--{boundary}--{CRLF}".encode("ascii")])


def _head_bytes(head: str, stuffed: bool) -> bytes:
    data = head.encode("utf-8")
    return dot_stuffed(data) if stuffed else data
