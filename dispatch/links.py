"""Signed links for subscribers: manage preferences, unsubscribe, confirm.

A token is an HMAC-signed, timestamped claim (itsdangerous) naming the
subscriber, salted per purpose: it cannot be forged or guessed without the
secret key, and a token made for one purpose is refused for another. It also carries
a short digest of the address, so a token never works for a later subscriber
that happens to get the same id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, lru_cache

from itsdangerous import BadSignature, Signer, TimestampSigner
from itsdangerous.encoding import int_to_bytes


from dispatch.errors import DispatchError

MAX_AGE = {
    "confirm": timedelta(days=7),
    "preferences": timedelta(days=365),
    # Old emails' unsubscribe links must keep working (RFC 8058 one-click).
    "unsubscribe": timedelta(days=730),
    # The cookie a reader's link sets, so the archive opens for them for a while.
    "reader": timedelta(days=30),
}
# Links that never expire and are the same every time they are made (a
# shared email body holds them, and feed readers keep a URL for good). Each
# names exactly what it grants: one SITREP, one delivery, one reader's feed.
STATIC_PURPOSES = ("sitrep", "view", "feed")


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


@lru_cache(maxsize=1024)  # three links a message name the same reader
def address_tag(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()[:10]


def _b64(data: bytes) -> str:
    """itsdangerous's ``base64_encode``: URL-safe base64 without padding, as text."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=").decode("ascii")


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


@lru_cache(maxsize=4)  # every link made in one second carries the same timestamp
def _timestamp_part(timestamp: int) -> str:
    return _b64(int_to_bytes(timestamp))


# RFC 2104's pads, as translation tables (as the stdlib's hmac module keeps them).
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class KeyedHmac:
    """``hmac.digest(key, message, digest)`` for one key, made from the two
    keyed hash states of RFC 2104, copied for each message. The one-shot
    call asks OpenSSL 3 to look its digest up every time, which costs twice
    this; a message is signed several times on its way out."""

    def __init__(self, key: bytes, digest):
        """``digest``: a hashlib constructor (``hashlib.sha256``, or itsdangerous's lazy sha1)."""
        block = digest().block_size
        if len(key) > block:
            key = digest(key).digest()
        key = key.ljust(block, b"\0")
        self._inner, self._outer = digest(key.translate(_IPAD)), digest(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner, outer = self._inner.copy(), self._outer.copy()
        inner.update(message)
        outer.update(inner.digest())
        return outer.digest()


class _FastSign:
    """Signing as itsdangerous's signers do it, byte for byte, with the key
    derived once and the HMAC made by KeyedHmac: itsdangerous names sha1
    through a Python function, which sends ``hmac`` down its pure-Python
    path, and three links are made for every reader of every digest.
    Reading stays itsdangerous's own (``unsign``)."""

    @cached_property
    def _keyed(self) -> tuple[KeyedHmac, str]:
        """The keyed HMAC and the separator as text."""
        return KeyedHmac(super().derive_key(), self.digest_method), self.sep.decode("ascii")

    def signed(self, value: str) -> str:
        """``sign(value)`` (an ASCII value), as text."""
        mac, sep = self._keyed
        return f"{value}{sep}{_b64(mac.digest(value.encode('ascii')))}"


class _Signer(_FastSign, TimestampSigner):
    def signed_at(self, value: str, timestamp: int) -> str:
        """``sign(value)`` as issued at ``timestamp`` (an int, as ``get_timestamp`` gives)."""
        return self.signed(f"{value}{self._keyed[1]}{_timestamp_part(timestamp)}")


class _StaticSigner(_FastSign, Signer):
    pass


@lru_cache(maxsize=64)
def _signer(secret: str, purpose: str) -> _Signer:
    if purpose not in MAX_AGE:
        raise ValueError(f"unknown link purpose {purpose!r}")
    # A salt per purpose: a token made for one purpose fails for another.
    return _Signer(secret, salt=f"dispatch-subscriber-{purpose}")


def make_token(secret: str, *, subscriber_id: int, address: str, purpose: str, now: float | None = None) -> str:
    """``<id>-<address tag>.<timestamp>.<signature>``; ``now``: issued at that moment (tests of expiry)."""
    return _signer(secret, purpose).signed_at(f"{subscriber_id}-{address_tag(address)}",
                                               int(time.time() if now is None else now))


MAX_TOKEN = 200  # no link of ours is this long


def read_token(secret: str, token: str, *, purpose: str, now: float | None = None) -> Claims:
    if len(token) > MAX_TOKEN:  # bounded before any work, as read_static is
        raise TokenError("this link is not valid")
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
    return _route(purpose, make_token(secret, subscriber_id=subscriber_id, address=address, purpose=purpose))


def _route(purpose: str, token: str) -> str:
    return f"/{purpose}/{token}"


def link_url(public_url: str, secret: str, *, subscriber_id: int, address: str, purpose: str) -> str:
    return public_url.rstrip("/") + link_path(secret, subscriber_id=subscriber_id, address=address, purpose=purpose)


def subscriber_links(public_url: str, secret: str, *, subscriber_id: int, address: str) -> SubscriberLinks:
    """Both links of a digest's footer, issued at the same second (as
    ``link_url`` makes each): the claim and the moment worked out once."""
    base, value, issued = public_url.rstrip("/"), f"{subscriber_id}-{address_tag(address)}", int(time.time())
    preferences, unsubscribe = (base + _route(purpose, _signer(secret, purpose).signed_at(value, issued))
                                for purpose in ("preferences", "unsubscribe"))
    return SubscriberLinks(preferences_url=preferences, unsubscribe_url=unsubscribe)


@lru_cache(maxsize=16)
def _static_signer(secret: str, purpose: str) -> _StaticSigner:
    if purpose not in STATIC_PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    return _StaticSigner(secret, salt=f"dispatch-static-{purpose}")


def sign_static(secret: str, value: str, *, purpose: str) -> str:
    """``<value>.<signature>``: deterministic, for ``STATIC_PURPOSES``."""
    return _static_signer(secret, purpose).signed(value)


def read_static(secret: str, token: str, *, purpose: str) -> str:
    if len(token) > MAX_TOKEN:  # bounded before any work: no link of ours is this long
        raise TokenError("this link is not valid")
    try:
        return _static_signer(secret, purpose).unsign(token.encode("ascii")).decode("ascii")
    except (BadSignature, UnicodeError) as exc:
        raise TokenError("this link is not valid") from exc


def sitrep_token(secret: str, sitrep_id: int) -> str:
    return sign_static(secret, str(sitrep_id), purpose="sitrep")


def read_sitrep_token(secret: str, token: str) -> int:
    value = read_static(secret, token, purpose="sitrep")
    if not value.isdigit():
        raise TokenError("this link is not valid")
    return int(value)


@dataclass(frozen=True)
class ViewClaims:
    delivery_id: int
    subscriber_id: int
    address_tag: str

    def is_for(self, address: str) -> bool:
        return self.address_tag == address_tag(address)


def view_token(secret: str, *, delivery_id: int, subscriber_id: int, address: str) -> str:
    return sign_static(secret, f"{delivery_id}-{subscriber_id}-{address_tag(address)}", purpose="view")


def read_view_token(secret: str, token: str) -> ViewClaims:
    try:
        delivery_id, subscriber_id, tag = read_static(secret, token, purpose="view").split("-", 2)
        return ViewClaims(int(delivery_id), int(subscriber_id), tag)
    except ValueError as exc:
        raise TokenError("this link is not valid") from exc


def feed_token(secret: str, *, subscriber_id: int, address: str) -> str:
    return sign_static(secret, f"{subscriber_id}-{address_tag(address)}", purpose="feed")


def read_feed_token(secret: str, token: str) -> Claims:
    try:
        subscriber_id, tag = read_static(secret, token, purpose="feed").split("-", 1)
        return Claims(int(subscriber_id), tag)
    except ValueError as exc:
        raise TokenError("this link is not valid") from exc


@dataclass(frozen=True)
class ArchiveLinks:
    """Where emails and Slack posts link a SITREP title, by archive mode:
    ``readers`` links carry a token that opens that one SITREP, ``public``
    ones need none, and with ``off`` nothing is linked."""

    public_url: str
    secret: str
    mode: str = "readers"  # readers | public | off

    def sitrep(self, sitrep_id: int) -> str | None:
        if self.mode == "off":
            return None
        url = f"{self.public_url.rstrip('/')}/archive/{sitrep_id}"
        return url if self.mode == "public" else f"{url}?t={sitrep_token(self.secret, sitrep_id)}"

    def index(self) -> str | None:
        return None if self.mode == "off" else f"{self.public_url.rstrip('/')}/archive"


# --- VERP return paths ----------------------------------------------------------
#
# ``bounces+d<delivery>-<signature>@example.org``: a bounce names its delivery
# without any parsing guesswork, and nobody can make dispatch count a bounce
# against a delivery they never saw. Lower-case base32, because some MTAs
# fold the local part's case; 65 bits of HMAC, enough against guessing and
# short enough for the 64-octet local part. No timestamp: a bounce may
# arrive days later, and the token only names a delivery, it grants nothing.

VERP_SIGNATURE_CHARS = 13
VERP_MAX_TOKEN = 2 + 19 + 1 + VERP_SIGNATURE_CHARS  # "d" + up to 19 digits + "-" + signature
MAX_BOUNCE_LOCAL = 64 - 1 - VERP_MAX_TOKEN  # room left in the local part for the bounce address's own


def _verp_signature(secret: str, delivery_id: int) -> str:
    key = hmac.new(secret.encode("utf-8"), b"dispatch verp return path", hashlib.sha256).digest()
    mac = hmac.new(key, str(delivery_id).encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(mac).decode("ascii").lower()[:VERP_SIGNATURE_CHARS]


def verp_token(secret: str, delivery_id: int) -> str:
    return f"d{int(delivery_id)}-{_verp_signature(secret, delivery_id)}"


def read_verp_token(secret: str, token: str) -> int:
    """The delivery a token names; TokenError if it is not one we made."""
    token = token[:VERP_MAX_TOKEN + 1].lower()
    head, _, signature = token.partition("-")
    digits = head[1:]
    if (not head.startswith("d") or not digits.isascii() or not digits.isdigit() or len(digits) > 19
            or len(signature) != VERP_SIGNATURE_CHARS):
        raise TokenError("the return path's token is not valid")
    delivery_id = int(digits)
    if not hmac.compare_digest(signature, _verp_signature(secret, delivery_id)):
        raise TokenError("the return path's token is not valid")
    return delivery_id


def return_path(bounce_address: str | None, secret: str, *, delivery_id: int) -> str | None:
    """The envelope sender for one delivery, or None (then the From address)."""
    if not bounce_address:
        return None
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{verp_token(secret, delivery_id)}@{domain}"


def verp_part(bounce_address: str, recipient: str) -> str | None:
    """The token in ``recipient`` if it is the bounce address with one
    (``local+token@domain``, domain and local part in any case), else None.
    ``""`` for the bare bounce address: ours, but naming no delivery."""
    local, _, domain = bounce_address.lower().rpartition("@")
    r_local, at, r_domain = recipient.strip().lower()[:320].rpartition("@")
    if not at or r_domain != domain:
        return None
    if r_local == local:
        return ""
    if r_local.startswith(local + "+"):
        return r_local[len(local) + 1:]
    return None
