"""Complaint reports in the Abuse Reporting Format (RFC 5965):
``multipart/report; report-type=feedback-report`` with a
``message/feedback-report`` part and the original message (or its headers).

``read`` returns a Complaint, or None when the message is not a feedback report.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
from dataclasses import dataclass

from dispatch.inbound import mailparts

# The feedback types that mean "the reader did not want this" (RFC 5965 §7.3).
COMPLAINT_TYPES = ("abuse", "fraud")


@dataclass(frozen=True)
class Complaint:
    feedback_type: str
    original_mail_from: str | None  # the envelope sender of the reported message: a VERP path
    original_rcpt_to: str | None  # the reader, lower-cased
    returned_message_id: str | None
    returned_return_path: str | None
    user_agent: str

    @property
    def is_complaint(self) -> bool:
        return self.feedback_type in COMPLAINT_TYPES


def read(message: email.message.Message) -> Complaint | None:
    if message.get_content_type() != "multipart/report" or \
            (message.get_param("report-type") or "").lower() != "feedback-report":
        return None
    for part in mailparts.parts(message):
        if part.get_content_type() != "message/feedback-report":
            continue
        fields = _fields(part)
        if fields is None:
            return None
        returned = mailparts.returned_headers(message)
        returned_id = mailparts.header(returned, "Message-ID") if returned is not None else ""
        return Complaint(
            feedback_type=mailparts.header(fields, "Feedback-Type").lower(),
            original_mail_from=mailparts.bare_address(mailparts.header(fields, "Original-Mail-From")) or None,
            original_rcpt_to=mailparts.bare_address(mailparts.header(fields, "Original-Rcpt-To"))
            or (mailparts.bare_address(mailparts.header(returned, "To")) if returned is not None else "") or None,
            returned_message_id=returned_id if returned_id.startswith("<") and len(returned_id) <= 252 else None,
            returned_return_path=mailparts.header(returned, "Return-Path") or None,
            user_agent=mailparts.header(fields, "User-Agent")[:100])
    return None


def _fields(part: email.message.Message) -> email.message.Message | None:
    """The report's fields: the email package reads a message/* part as a
    message whose headers they are; some senders base64 it, so read that too."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
        return payload[0]
    text = mailparts.text_of(part)
    if not text:
        return None
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text, headersonly=True)
