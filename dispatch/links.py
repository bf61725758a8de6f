"""Signed links for subscribers: manage preferences, unsubscribe, confirm.

A token is an HMAC-signed, timestamped claim (itsdangerous) naming the
subscriber and the purpose; it cannot be forged or guessed without the secret
key, and a token made for one purpose is refused for another. It also carries
a short digest of the address, so a token never works for a later subscriber
that happens to get the same id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

from dispatch.errors import DispatchError

MAX_AGE = {
    "confirm": timedelta(days=7),
    "preferences": timedelta(days=365),
    # Old emails' unsubscribe links must keep working (RFC 8058 one-click).
    "unsubscribe": timedelta(days=730),
}


class TokenError(DispatchError):
    def __init__(self, message: str, *, expired: bool = False):
        self.expired = expired
        super().__init__(message)


@dataclass(frozen=True)
class Claims:
    subscriber_id: int
    address_tag: str

    def is_for(self, address: str) -> bool:
        return self.address_tag == address_tag(address)


def address_tag(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()[:10]


def _signer(secret: str, purpose: str) -> TimestampSigner:
    if purpose not in MAX_AGE:
        raise ValueError(f"unknown link purpose {purpose!r}")
    # A signer over "id-tag" rather than a serializer: no JSON or zlib, since
    # a link is made for every reader of every digest.
    return TimestampSigner(secret, salt=f"dispatch-subscriber-{purpose}")


def make_token(secret: str, *, subscriber_id: int, address: str, purpose: str) -> str:
    return _signer(secret, purpose).sign(f"{subscriber_id}-{address_tag(address)}").decode("ascii")


def read_token(secret: str, token: str, *, purpose: str) -> Claims:
    try:
        value = _signer(secret, purpose).unsign(token, max_age=int(MAX_AGE[purpose].total_seconds()))
        subscriber_id, tag = value.decode("ascii").split("-", 1)
        return Claims(subscriber_id=int(subscriber_id), address_tag=tag)
    except SignatureExpired as exc:
        raise TokenError("this link has expired", expired=True) from exc
    except (BadSignature, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise TokenError("this link is not valid") from exc


@dataclass(frozen=True)
class SubscriberLinks:
    preferences_url: str
    unsubscribe_url: str


def subscriber_links(public_url: str, secret: str, *, subscriber_id: int, address: str) -> SubscriberLinks:
    base = public_url.rstrip("/")

    def token(purpose: str) -> str:
        return make_token(secret, subscriber_id=subscriber_id, address=address, purpose=purpose)

    return SubscriberLinks(
        preferences_url=f"{base}/preferences/{token('preferences')}",
        unsubscribe_url=f"{base}/unsubscribe/{token('unsubscribe')}",
    )
