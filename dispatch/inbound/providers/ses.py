"""Amazon SES bounce and complaint notifications, as SNS posts them to
/webhooks/ses (``sns`` verifies the envelope).

SES rewrites the Message-ID of what it sends; ours comes back only in
``mail.headers`` / ``mail.commonHeaders.messageId``, when the identity's
notifications include the original headers ("Include original email
headers"). Bounces: ``bounceType`` Permanent → hard, Transient → soft,
Undetermined → by the status; complaints → complaint. Delivery, send and
engagement notifications are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from cryptography import x509

from dispatch.inbound.outcomes import Kind
from dispatch.inbound.providers import sns
from dispatch.inbound.providers.reading import (MAX_DIAGNOSTIC, MAX_EVENTS, ProviderEvent, Refused, Verified,
                                                address, bounce_kind, key, load_json, mailbox_missing, message_id,
                                                status_in, text)

SOURCE = "ses"
PERMANENT = {"Permanent": True, "Transient": False}
MISSING_MAILBOX = {"NoEmail"}  # bounceSubType: "the address does not exist"


def read(body: bytes, headers: Mapping[str, str], *, certificates: Callable[[str], x509.Certificate],
         allowed_topics: tuple[str, ...], now: datetime) -> Verified:
    envelope = sns.verify(body, headers, certificates=certificates, allowed_topics=allowed_topics, now=now)
    expires = envelope.timestamp + sns.MAX_AGE
    if envelope.type == "SubscriptionConfirmation":
        return Verified(SOURCE, nonce=envelope.message_id, expires_at=expires, subscribe_url=envelope.subscribe_url,
                        note=f"subscription to {envelope.topic_arn[:200]}")
    if envelope.type == "UnsubscribeConfirmation":
        return Verified(SOURCE, nonce=envelope.message_id, expires_at=expires,
                        note=f"unsubscribed from {envelope.topic_arn[:200]}")
    found, ignored = notification_events(envelope.message, sns_message_id=envelope.message_id)
    return Verified(SOURCE, tuple(found), ignored, nonce=envelope.message_id, expires_at=expires)


def notification_events(message: str, *, sns_message_id: str) -> tuple[list[ProviderEvent], int]:
    """The SES notification inside an SNS message → its events, and how many were ignored."""
    data = load_json(message, what="the SES notification")
    if not isinstance(data, dict):
        raise Refused(400, "the SES notification is not a JSON object")
    kind = data.get("notificationType") or data.get("eventType")  # event publishing says eventType
    mail = data.get("mail") if isinstance(data.get("mail"), dict) else {}
    ours = _our_message_id(mail)
    if kind == "Bounce" and isinstance(data.get("bounce"), dict):
        return _bounces(data["bounce"], ours, sns_message_id), 0
    if kind == "Complaint" and isinstance(data.get("complaint"), dict):
        return _complaints(data["complaint"], ours, sns_message_id), 0
    return [], 1


def _bounces(bounce: dict, ours: str | None, sns_message_id: str) -> list[ProviderEvent]:
    permanent = PERMANENT.get(bounce.get("bounceType"))
    subtype = text(bounce.get("bounceSubType"), 40)
    feedback = text(bounce.get("feedbackId"), 120)
    found = []
    for recipient in _listed(bounce.get("bouncedRecipients")):
        to = address(recipient.get("emailAddress"))
        status = status_in(recipient.get("status"), recipient.get("diagnosticCode"))
        diagnostic = text(recipient.get("diagnosticCode"), MAX_DIAGNOSTIC) or \
            f"{text(bounce.get('bounceType'), 20)} {subtype}".strip()
        found.append(ProviderEvent(
            bounce_kind(permanent=permanent, status=status), to, ours, status, diagnostic,
            key(feedback or sns_message_id, to), address_invalid=subtype in MISSING_MAILBOX or mailbox_missing(status)))
    return found


def _complaints(complaint: dict, ours: str | None, sns_message_id: str) -> list[ProviderEvent]:
    feedback = text(complaint.get("feedbackId"), 120)
    what = " ".join(x for x in ("feedback-type", text(complaint.get("complaintFeedbackType"), 40) or "abuse",
                                text(complaint.get("userAgent"), 100)) if x)
    return [ProviderEvent(Kind.complaint, address(r.get("emailAddress")), ours, None, what,
                          key(feedback or sns_message_id, address(r.get("emailAddress"))))
            for r in _listed(complaint.get("complainedRecipients"))]


def _listed(value) -> list[dict]:
    if not isinstance(value, list):
        return []
    if len(value) > MAX_EVENTS:
        raise Refused(413, f"more than {MAX_EVENTS} recipients in one notification")
    return [item for item in value if isinstance(item, dict)]


def _our_message_id(mail: dict) -> str | None:
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and common.get("messageId"):
        return message_id(common.get("messageId"))
    for header in _listed(mail.get("headers"))[:200]:
        if text(header.get("name"), 40).lower() == "message-id":
            return message_id(header.get("value"))
    return None
