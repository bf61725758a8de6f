"""Mailgun's webhooks (the JSON format: ``signature`` and ``event-data``),
posted to /webhooks/mailgun.

The signature is the hex HMAC-SHA256 of timestamp + token with the
webhook signing key (DISPATCH_MAILGUN_SIGNING_KEY). It does not cover
``event-data``, so the token is the nonce: a token seen once is refused
after that (``record``), and a timestamp older than ``MAX_AGE`` (its
retry span) is refused outright. ``message.headers.message-id`` is the email's
Message-ID, without its angle brackets.

Kinds: ``failed`` with severity permanent → hard (unless the status
says 4.x.x or a full mailbox), temporary → soft; a failure because the
address is on Mailgun's bounce list (reason suppress-bounce) is hard, on
its complaint list (suppress-complaint) a complaint; ``complained`` →
complaint; every other event is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta

from dispatch.inbound.outcomes import Kind
from dispatch.inbound.providers.reading import (MAX_DIAGNOSTIC, ProviderEvent, Refused, Verified,
                                                address, bounce_kind, fresh, key, load_json, mailbox_missing,
                                                message_id, status_in, text, unix_time)

SOURCE = "mailgun"
# Mailgun retries a webhook for 8 hours; whether a retry is signed anew it does not say.
MAX_AGE = timedelta(hours=8, minutes=15)
MAX_TOKEN = 100  # Mailgun's tokens are 50 characters
SEVERITY = {"permanent": True, "temporary": False}


def read(body: bytes, headers: Mapping[str, str], *, signing_key: str, now: datetime) -> Verified:
    data = load_json(body, what="the Mailgun webhook")
    signature = data.get("signature") if isinstance(data, dict) else None
    if not isinstance(signature, dict):
        raise Refused(401, "the request is not signed (no signature block)")
    stamp, token, given = (str(signature.get(k, "")) for k in ("timestamp", "token", "signature"))
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not token or len(token) > MAX_TOKEN \
            or not token.isascii() or len(given) != 64 or not given.isascii():
        raise Refused(403, "the signature block is not well formed")
    expected = hmac.new(signing_key.encode("utf-8"), (stamp + token).encode("ascii"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise Refused(403, "the Mailgun signature does not verify")
    signed_at = unix_time(stamp, what="the Mailgun signature's timestamp")
    fresh(signed_at, now=now, max_age=MAX_AGE, what="the Mailgun signature's timestamp")
    event_data = data.get("event-data")
    event = _event(event_data) if isinstance(event_data, dict) else None
    return Verified(SOURCE, (event,) if event else (), 0 if event else 1, nonce="token:" + token,
                    expires_at=signed_at + MAX_AGE)


def _event(data: dict) -> ProviderEvent | None:
    name = text(data.get("event"), 30).lower()
    reason = text(data.get("reason"), 40).lower()
    status_block = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    words = " ".join(x for x in (text(status_block.get("message"), MAX_DIAGNOSTIC),
                                 text(status_block.get("description"), MAX_DIAGNOSTIC)) if x)
    status = status_in(status_block.get("enhanced-code"), words) or _from_code(status_block.get("code"))
    invalid = False
    if name == "failed":
        if reason == "suppress-complaint":
            kind = Kind.complaint
        else:
            kind = bounce_kind(permanent=SEVERITY.get(text(data.get("severity"), 20).lower()), status=status)
            invalid = kind == Kind.hard_bounce and (reason == "suppress-bounce" or mailbox_missing(status))
    elif name == "complained":
        kind = Kind.complaint
    else:
        return None
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    message_headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    diagnostic = words or reason or name
    return ProviderEvent(kind, address(data.get("recipient")), message_id(message_headers.get("message-id")),
                         status, diagnostic, key(text(data.get("id"), 100), text(data.get("timestamp"), 30)),
                         address_invalid=invalid)


def _from_code(code) -> str | None:
    """Mailgun's basic SMTP code (550) when no enhanced status is given: its class only."""
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        return f"{code // 100}.0.0"
    return None
