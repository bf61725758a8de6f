"""Delivery status notifications: RFC 3464 (``multipart/report;
report-type=delivery-status``), and the common bounces that are not (qmail's
"failure notice", Exim's X-Failed-Recipients, a MAILER-DAEMON's plain text)
read well enough to find the delivery and a status.

``read`` returns a Bounce, or None when the message is no bounce at all.
"""

from __future__ import annotations

import email.message
import re
from dataclasses import dataclass

from dispatch.inbound import mailparts

# RFC 3463 status and an SMTP reply code in free text; fixed shapes, linear.
STATUS_IN_TEXT = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
REPLY_CODE_IN_TEXT = re.compile(r"(?<![\d.])([45][0-5]\d)(?=[ -])")
BOUNCE_SUBJECTS = ("undelivered mail", "undeliverable", "delivery status notification", "failure notice",
                   "mail delivery failed", "returned mail", "delivery failure", "mail delivery subsystem",
                   "could not be delivered", "delivery has failed")
BOUNCE_SENDERS = ("mailer-daemon", "postmaster", "mail delivery subsystem")


@dataclass(frozen=True)
class Bounce:
    status: str | None  # 5.1.1
    action: str | None  # failed | delayed | delivered | relayed | expanded
    recipient: str | None  # the address that failed, lower-cased
    diagnostic: str
    returned_message_id: str | None
    returned_return_path: str | None  # the returned message's envelope sender (a VERP path)
    standard: bool  # RFC 3464, not read from free text


def read(message: email.message.Message, *, null_sender: bool = False) -> Bounce | None:
    if message.get_content_type() == "multipart/report" and \
            (message.get_param("report-type") or "").lower() == "delivery-status":
        found = _rfc3464(message)
        if found is not None:
            return found
    if not (null_sender or _looks_like_a_bounce(message)):
        return None
    return _free_text(message)


def _rfc3464(message: email.message.Message) -> Bounce | None:
    for part in mailparts.parts(message):
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            return None
        # The first block is per message; each later one is per recipient.
        recipients = [b for b in blocks[1:mailparts.MAX_PARTS] if isinstance(b, email.message.Message)]
        chosen = _worst(recipients)
        if chosen is None:
            return None
        returned = mailparts.returned_headers(message)
        return Bounce(
            status=_first_status(mailparts.header(chosen, "Status")),
            action=mailparts.header(chosen, "Action").lower() or None,
            recipient=mailparts.bare_address(mailparts.header(chosen, "Final-Recipient")
                                             or mailparts.header(chosen, "Original-Recipient")) or None,
            diagnostic=mailparts.header(chosen, "Diagnostic-Code").split(";", 1)[-1].strip()[:500],
            returned_message_id=_returned_id(returned, message),
            returned_return_path=mailparts.header(returned, "Return-Path") or None,
            standard=True)
    return None


def _worst(recipients: list[email.message.Message]):
    """The recipient block that matters: a failure before a delay before the rest."""
    rank = {"failed": 0, "delayed": 1}
    best = None
    for block in recipients:
        action = mailparts.header(block, "Action").lower()
        if best is None or rank.get(action, 2) < rank.get(mailparts.header(best, "Action").lower(), 2):
            best = block
    return best


def _first_status(text: str) -> str | None:
    match = STATUS_IN_TEXT.search(text[:64])
    return match.group(1) if match else None


def _returned_id(returned, message) -> str | None:
    if returned is not None:
        value = mailparts.header(returned, "Message-ID")
        if value.startswith("<") and value.endswith(">") and len(value) <= 252:
            return value
    for part in mailparts.parts(message):
        if part.get_content_maintype() == "text":
            found = mailparts.message_id_in(mailparts.text_of(part))
            if found:
                return found
    return None


def _looks_like_a_bounce(message: email.message.Message) -> bool:
    if mailparts.header(message, "X-Failed-Recipients"):
        return True
    sender = mailparts.header(message, "From").lower()
    subject = mailparts.header(message, "Subject").lower()
    return any(s in sender for s in BOUNCE_SENDERS) or any(s in subject for s in BOUNCE_SUBJECTS)


def _free_text(message: email.message.Message) -> Bounce:
    """A bounce that is not RFC 3464: the first status (or reply code) in its
    text before the returned message, and the returned message's Message-ID."""
    text = ""
    for part in mailparts.parts(message):
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_type() == "text/plain":
            text = mailparts.text_of(part)
            break
    head, _, _ = text.partition("\n--- ")  # qmail and Postfix start the returned message so
    status_match = STATUS_IN_TEXT.search(head)
    status = status_match.group(1) if status_match else None
    if status is None:
        code = REPLY_CODE_IN_TEXT.search(head)
        status = f"{code.group(1)[0]}.0.0" if code else None
    failed = mailparts.header(message, "X-Failed-Recipients").split(",")[0]
    returned = mailparts.returned_headers(message)
    return Bounce(
        status=status, action="failed",
        recipient=mailparts.bare_address(failed) or None,
        diagnostic=" ".join(head.split())[:300],
        returned_message_id=_returned_id(returned, message) or mailparts.message_id_in(text),
        returned_return_path=mailparts.header(returned, "Return-Path") or None,
        standard=False)
