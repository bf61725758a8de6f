"""The Standard Webhooks signature (https://www.standardwebhooks.com/):
each POST carries ``webhook-id`` (the event id: the same on every retry, the
receiver's key for telling a repeat), ``webhook-timestamp`` (Unix seconds)
and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``<id>.<timestamp>.<body>`` keyed with the webhook's secret. A secret is
``whsec_`` and base64 of 24 random bytes; the key is those bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
KEY_BYTES = 24


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret[len(PREFIX):] if secret.startswith(PREFIX) else secret)


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode("ascii")


def headers(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id=msg_id, timestamp=timestamp, body=body),
            "Content-Type": "application/json"}


def masked(secret: str) -> str:
    """For listings: enough to tell two apart, nothing to sign with."""
    return secret[:len(PREFIX) + 4] + "…"
