"""Signed links for subscribers: manage preferences, unsubscribe, confirm.

A token is an HMAC-signed, timestamped claim (itsdangerous) naming the
subscriber, salted per purpose: it cannot be forged or guessed without the
secret key, and a token made for one purpose is refused for another. It also carries
a short digest of the address, so a token never works for a later subscriber
that happens to get the same id.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, lru_cache

from itsdangerous import BadSignature, TimestampSigner
from itsdangerous.encoding import base64_encode, want_bytes


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


class _Signer(TimestampSigner):
    """itsdangerous's timestamp signer, deriving its key and keying its HMAC
    once instead of for every signature: two links are made for every reader
    of every digest. The signatures are itsdangerous's own, byte for byte."""

    @cached_property
    def _key(self) -> bytes:
        return super().derive_key()

    @cached_property
    def _keyed_mac(self):
        return hmac.new(self._key, digestmod=self.digest_method)

    def derive_key(self, secret_key=None) -> bytes:
        return self._key if secret_key is None else super().derive_key(secret_key)

    def get_signature(self, value) -> bytes:
        mac = self._keyed_mac.copy()  # a keyed copy: no key schedule per signature
        mac.update(want_bytes(value))
        return base64_encode(mac.digest())


@lru_cache(maxsize=64)
def _signer(secret: str, purpose: str) -> TimestampSigner:
    if purpose not in MAX_AGE:
        raise ValueError(f"unknown link purpose {purpose!r}")
    # A salt per purpose: a token made for one purpose fails for another.
    return _Signer(secret, salt=f"dispatch-subscriber-{purpose}")


def make_token(secret: str, *, subscriber_id: int, address: str, purpose: str, now: float | None = None) -> str:
    """``<id>-<address tag>.<timestamp>.<signature>``"""
    signer = _signer(secret, purpose)
    if now is not None:  # issued at a given moment (tests of expiry)
        signer = copy.copy(signer)
        signer.get_timestamp = lambda: int(now)
    return signer.sign(f"{subscriber_id}-{address_tag(address)}".encode("ascii")).decode("ascii")


def read_token(secret: str, token: str, *, purpose: str, now: float | None = None) -> Claims:
    signer = _signer(secret, purpose)
    max_age = int(MAX_AGE[purpose].total_seconds())
    try:
        value, issued = signer.unsign(token, return_timestamp=True)
        subscriber_id, tag = value.decode("ascii").split("-", 1)
        claims = Claims(subscriber_id=int(subscriber_id), address_tag=tag)
    except (BadSignature, ValueError, UnicodeError) as exc:
        raise TokenError("this link is not valid") from exc
    age = (time.time() if now is None else now) - issued.timestamp()
    if age > max_age:
        raise TokenError("this link has expired", expired=True)
    return claims


@dataclass(frozen=True)
class SubscriberLinks:
    preferences_url: str
    unsubscribe_url: str


def link_path(secret: str, *, subscriber_id: int, address: str, purpose: str) -> str:
    """The site-relative path of a signed link: ``/<purpose>/<token>`` (the web pages' routes)."""
    return f"/{purpose}/{make_token(secret, subscriber_id=subscriber_id, address=address, purpose=purpose)}"


def link_url(public_url: str, secret: str, *, subscriber_id: int, address: str, purpose: str) -> str:
    return public_url.rstrip("/") + link_path(secret, subscriber_id=subscriber_id, address=address, purpose=purpose)


def subscriber_links(public_url: str, secret: str, *, subscriber_id: int, address: str) -> SubscriberLinks:
    return SubscriberLinks(
        preferences_url=link_url(public_url, secret, subscriber_id=subscriber_id, address=address,
                                 purpose="preferences"),
        unsubscribe_url=link_url(public_url, secret, subscriber_id=subscriber_id, address=address,
                                 purpose="unsubscribe"),
    )
