"""Postmark's Bounce and SpamComplaint webhooks, posted to /webhooks/postmark.

Postmark signs nothing; its webhook URL carries HTTP basic auth
(``https://user:password@host/webhooks/postmark``), compared in constant
time with DISPATCH_POSTMARK_WEBHOOK_AUTH. Each request is one record; its
``RecordType`` and ``ID`` make the event key, so a second copy changes
nothing.

Postmark's ``MessageID`` is its own, not our Message-ID. Ours comes back
only inside ``Content``, the raw bounce message, when the webhook has
"Include bounce content" on: it is read as a DSN (or an ARF report) by
the same readers as ``dispatch inbound``. Without it an event can be
attributed by its address only (see ``record``).

Types: HardBounce, BadEmailAddress → hard (Postmark: the address does not
exist); SoftBounce, Transient, DnsError, Blocked, SpamNotification → soft;
SpamComplaint → complaint; the rest (AutoResponder, AddressChange,
OpenRelayTest, ManuallyDeactivated …) are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from dispatch.inbound import arf, dsn, mailparts
from dispatch.inbound.outcomes import Kind
from dispatch.inbound.providers.reading import (MAX_DIAGNOSTIC, ProviderEvent, Refused, Verified, address,
                                                bounce_kind, key, load_json, message_id, status_in, text)

SOURCE = "postmark"
MAX_AUTHORIZATION = 1024
MAX_CONTENT = 256 * 1024  # the bounce dump read for our Message-ID
TYPES = {"HardBounce": Kind.hard_bounce, "BadEmailAddress": Kind.hard_bounce,
         "SoftBounce": Kind.soft_bounce, "Transient": Kind.soft_bounce, "DnsError": Kind.soft_bounce,
         "Blocked": Kind.soft_bounce, "SpamNotification": Kind.soft_bounce,
         "SpamComplaint": Kind.complaint}
MISSING_MAILBOX = {"HardBounce", "BadEmailAddress"}


def check_auth(headers: Mapping[str, str], *, expected: str) -> None:
    """401 unless the request carries ``expected`` (user:password) as basic auth."""
    given = headers.get("authorization", "")[:MAX_AUTHORIZATION]
    scheme, _, encoded = given.partition(" ")
    try:
        credentials = base64.b64decode(encoded.strip(), validate=True) if scheme.lower() == "basic" else b""
    except (binascii.Error, ValueError):
        credentials = b""
    # Digests first, so the comparison takes as long whatever the length of what was sent.
    if not (credentials and hmac.compare_digest(hashlib.sha256(credentials).digest(),
                                                hashlib.sha256(expected.encode("utf-8")).digest())):
        raise Refused(401, "the request does not carry the webhook's user and password")


def read(body: bytes, headers: Mapping[str, str], *, expected_auth: str) -> Verified:
    check_auth(headers, expected=expected_auth)
    data = load_json(body, what="the Postmark webhook")
    if not isinstance(data, dict):
        raise Refused(400, "the Postmark webhook is not a JSON object")
    record = text(data.get("RecordType"), 30)
    kind_name = "SpamComplaint" if record == "SpamComplaint" else text(data.get("Type"), 40)
    kind = TYPES.get(kind_name) if record in ("Bounce", "SpamComplaint") else None
    if kind is None:
        return Verified(SOURCE, (), 1)
    details = text(data.get("Details"), MAX_DIAGNOSTIC)
    status = status_in(details)
    if kind == Kind.hard_bounce:  # a 4.x.x or a full mailbox in its details is soft all the same
        kind = bounce_kind(permanent=True, status=status)
    diagnostic = details or text(data.get("Description"), MAX_DIAGNOSTIC) or kind_name
    event = ProviderEvent(kind, address(data.get("Email")), _message_id_in(data.get("Content"), kind), status,
                          diagnostic, key(record, text(data.get("ID"), 40) or text(data.get("MessageID"), 60)),
                          address_invalid=kind == Kind.hard_bounce and kind_name in MISSING_MAILBOX)
    return Verified(SOURCE, (event,))


def _message_id_in(content, kind: Kind) -> str | None:
    """Our Message-ID in the raw bounce or complaint Postmark kept, if it sent it."""
    if not isinstance(content, str) or not content or len(content) > MAX_CONTENT:
        return None
    try:
        message = mailparts.parse(content.encode("utf-8", "replace"))
        report = arf.read(message) if kind == Kind.complaint else dsn.read(message, null_sender=True)
    except (mailparts.MailError, LookupError, ValueError, TypeError, AttributeError):
        return None
    return message_id(report.returned_message_id) if report is not None and report.returned_message_id else None
