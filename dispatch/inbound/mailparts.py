"""Reading hostile mail with bounds: a size cap before parsing, a cap on the
parts (and so on the nesting) while parsing, and every text that a pattern
sees cut to ``MAX_SCAN`` first (each pattern here and in dsn/arf runs in
linear time). A message is parsed once, however many recipients it has."""

from __future__ import annotations

import email
import email.header
import email.message
import email.utils
import email.parser
import email.policy
import re

from dispatch.errors import InputError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a DSN carries the returned digest (~100 KB): ample
MAX_PARTS = 64
MAX_SCAN = 64 * 1024
MAX_HEADER = 998

# <…> with no space or bracket inside, at most 250 characters: no nesting, linear.
MESSAGE_ID_LINE = re.compile(r"(?im)^message-id:[ \t]*(<[^<>\s]{1,250}>)")


class MailError(InputError):
    """A message we cannot read at all (too many parts, nested too deeply, not a message)."""


class MailTooLarge(MailError):
    """A message over MAX_MESSAGE_BYTES."""


class _TooManyParts(Exception):
    pass


def parse(data: bytes) -> email.message.Message:
    """The message, parsed with bounds: its size is checked before anything,
    and the parser stops at the part after MAX_PARTS (each nesting level is
    a part, so this bounds the depth too) instead of building them all."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MailTooLarge(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    made = 0

    def counted(policy=email.policy.compat32) -> email.message.Message:
        nonlocal made
        made += 1
        if made > MAX_PARTS + 1:  # the parser makes one first, to see what the factory takes
            raise _TooManyParts
        return email.message.Message(policy)

    # compat32: every header comes back as text, whatever it holds; the
    # modern policy parses structured headers lazily and can raise later.
    try:
        return email.parser.BytesParser(counted, policy=email.policy.compat32).parsebytes(data)
    except _TooManyParts:
        raise MailError(f"the message has more than {MAX_PARTS} parts or is nested too deeply to read") from None
    except RecursionError as exc:  # a belt to the braces above: the stdlib parser recurses once per level
        raise MailError("the message is nested too deeply to read") from exc


def header(message, name: str) -> str:
    value = message.get(name) if message is not None else None
    if value is None:
        return ""
    return " ".join(str(value)[:MAX_HEADER].split())


def parts(message: email.message.Message):
    """The message's parts, at most MAX_PARTS of them (a nesting bomb stops here)."""
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            return
        yield part


def text_of(part: email.message.Message) -> str:
    """A text part's content, decoded and cut to MAX_SCAN characters."""
    if part.is_multipart():
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[:MAX_SCAN].decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload[:MAX_SCAN].decode("utf-8", "replace")


def returned_headers(message: email.message.Message) -> email.message.Message | None:
    """The headers of the message a report returns: a message/rfc822 part,
    or a text/rfc822-headers part (RFC 3462), or None."""
    for part in parts(message):
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                return inner[0]
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            text = text_of(part)
            return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text, headersonly=True)
    return None


def message_id_in(text: str) -> str | None:
    match = MESSAGE_ID_LINE.search(text[:MAX_SCAN])
    return match.group(1) if match else None


def bare_address(value: str) -> str:
    """The address in ``rfc822; a@b``, ``<a@b>`` or ``Name <a@b>``, lower-cased."""
    value = value[:MAX_HEADER]
    if ";" in value:
        value = value.split(";", 1)[1]
    _, address = email.utils.parseaddr(value.strip())
    return address.strip().lower()


def decoded_header(message, name: str) -> str:
    """A header with its RFC 2047 words decoded (mail clients encode a long
    subject so), or as it stands when it cannot be."""
    raw = header(message, name)
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))[:MAX_HEADER]
    except (ValueError, LookupError, UnicodeError):
        return raw
