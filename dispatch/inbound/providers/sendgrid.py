"""SendGrid's Event Webhook (signed), posted to /webhooks/sendgrid.

The signature (``X-Twilio-Email-Event-Webhook-Signature``, base64 DER
ECDSA over SHA-256) covers the timestamp header followed by the raw body,
verified with the P-256 public key that SendGrid shows as the
"verification key" (DISPATCH_SENDGRID_VERIFICATION_KEY). A batch holds up
to ``MAX_EVENTS`` events; ``smtp-id`` is the Message-ID of the email.

Kinds: ``bounce`` (type "bounce" → hard, "blocked" → soft, the status
decides within that), ``dropped`` for a "Bounced Address" or "Invalid"
→ hard, for a "Spam Reporting Address" → complaint, for "Expired" →
soft; ``spamreport`` → complaint. Everything else (processed, deferred,
delivered, open, click …) is ignored: a deferred message is retried by
SendGrid, which reports a bounce if it gives up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from dispatch.inbound.outcomes import Kind
from dispatch.inbound.providers.reading import (MAX_DIAGNOSTIC, MAX_EVENTS, ProviderEvent, Refused,
                                                Verified, address, bounce_kind, fresh, key, load_json,
                                                mailbox_missing, message_id, status_in, text, unix_time)

SOURCE = "sendgrid"
# SendGrid retries a batch for up to a day; a retry may carry its first signature.
MAX_AGE = timedelta(hours=24, minutes=15)
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
MAX_SIGNATURE_CHARS = 200  # a P-256 DER signature is at most 72 bytes
DROPPED = {"bounced address": Kind.hard_bounce, "invalid": Kind.hard_bounce,
           "spam reporting address": Kind.complaint, "expired": Kind.soft_bounce}
INVALID_ADDRESS = "invalid address"  # bounce_classification


def load_key(verification_key: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER); config checked it already."""
    key = load_der_public_key(base64.b64decode("".join(verification_key.split())))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def read(body: bytes, headers: Mapping[str, str], *, public_key: ec.EllipticCurvePublicKey,
         now: datetime) -> Verified:
    signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if not signature or not stamp:
        raise Refused(401, "the request is not signed (X-Twilio-Email-Event-Webhook-Signature and -Timestamp)")
    stamp = stamp.strip()
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or len(signature) > MAX_SIGNATURE_CHARS:
        raise Refused(403, "the signature headers are not well formed")
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        public_key.verify(raw, stamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise Refused(403, "the SendGrid signature does not verify") from None
    signed_at = unix_time(stamp, what="the SendGrid signature's timestamp")
    fresh(signed_at, now=now, max_age=MAX_AGE, what="the SendGrid signature's timestamp")
    batch = load_json(body, what="the SendGrid batch")
    if not isinstance(batch, list):
        raise Refused(400, "the SendGrid batch is not a JSON list")
    if len(batch) > MAX_EVENTS:
        raise Refused(413, f"more than {MAX_EVENTS} events in one batch")
    found, ignored = [], 0
    for item in batch:
        event = _event(item) if isinstance(item, dict) else None
        if event is None:
            ignored += 1
        else:
            found.append(event)
    nonce = "sha256:" + hashlib.sha256(stamp.encode("ascii") + body).hexdigest()
    return Verified(SOURCE, tuple(found), ignored, nonce=nonce, expires_at=signed_at + MAX_AGE)


def _event(item: dict) -> ProviderEvent | None:
    name = text(item.get("event"), 30).lower()
    reason = text(item.get("reason"), MAX_DIAGNOSTIC)
    status = status_in(item.get("status"), reason)
    if name == "bounce":
        kind = bounce_kind(permanent=text(item.get("type"), 20).lower() != "blocked", status=status)
        invalid = mailbox_missing(status) or text(item.get("bounce_classification"), 40).lower() == INVALID_ADDRESS
    elif name == "dropped":
        kind = DROPPED.get(reason.lower())
        invalid = kind == Kind.hard_bounce  # SendGrid already holds the address as bounced or invalid
    elif name == "spamreport":
        kind, invalid = Kind.complaint, False
    else:
        return None
    if kind is None:
        return None
    to = address(item.get("email"))
    smtp_id = message_id(item.get("smtp-id"))
    event_id = text(item.get("sg_event_id"), 120)
    diagnostic = reason or f"{name} {text(item.get('type'), 20)}".strip()
    return ProviderEvent(kind, to, smtp_id, status, diagnostic,
                         key(event_id) if event_id else key(name, smtp_id, to, text(item.get("timestamp"), 20)),
                         address_invalid=invalid)
