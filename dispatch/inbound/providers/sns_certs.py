"""The certificates that sign Amazon SNS messages: which URLs may serve
one, fetching it (pluggable, so tests serve a certificate they made), and
a small cache.

A signing certificate is trusted only from ``https://sns.<region>.amazonaws.com``
(or ``.amazonaws.com.cn``) in the region of the message's topic, fetched
over TLS checked against the system's CAs, without following a redirect,
at most ``MAX_CERT_BYTES`` and within ``FETCH_SECONDS``. The same rules
hold for the SubscribeURL that confirms a subscription.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from cryptography import x509

from dispatch import outbound

MAX_CERT_BYTES = 64 * 1024  # an SNS signing certificate is about 2 KB
MAX_CONFIRM_BYTES = 64 * 1024  # the XML answer to a SubscribeURL
FETCH_SECONDS = 5.0
CACHE_SIZE = 16  # AWS rotates a handful of certificates per region
# A URL that failed is not fetched again for a while: anyone can post a
# message naming some other path on the SNS host, and each would be a fetch.
FAILED_FOR = timedelta(minutes=5)
FAILED_SIZE = 256

Fetcher = Callable[..., bytes]  # fetcher(url, *, max_bytes, timeout) -> body; raises FetchError


class FetchError(Exception):
    """The URL could not be fetched within the bounds (the reason names no secret)."""


def sns_host_problem(url: str, *, region: str | None) -> str | None:
    """Why ``url`` may not be fetched for an SNS message of ``region``, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL"
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or parts.username or parts.password or port not in (None, 443):
        return "must be https on the default port, without user or password"
    allowed = {f"sns.{region}.amazonaws.com", f"sns.{region}.amazonaws.com.cn"} if region else set()
    if host not in allowed:
        return f"host {host[:100]!r} is not the SNS host of the topic's region"
    return None


def certificate_url_problem(url: str, *, region: str | None) -> str | None:
    problem = sns_host_problem(url, region=region)
    if problem is None and (urlsplit(url).query or not urlsplit(url).path.endswith(".pem")):
        problem = "is not a .pem file"
    return problem


class HttpsFetcher:
    """GET over TLS with the system's trust store; no redirects, bounded
    size, and one deadline for the whole fetch (``dispatch.outbound``: a
    server dripping its headers or body a byte at a time is cut off when
    it runs out, and the connection goes to a checked public address). The
    default fetcher; tests pass their own, or ``allowed`` loopback."""

    def __init__(self, *, context: ssl.SSLContext | None = None, allowed=()):
        self.context = context or ssl.create_default_context()
        self.allowed = outbound.networks(allowed)

    def __call__(self, url: str, *, max_bytes: int, timeout: float = FETCH_SECONDS) -> bytes:
        try:
            answer = outbound.request("GET", url, None, {"User-Agent": "dispatch"}, timeout=timeout,
                                      allowed=self.allowed, max_answer=max_bytes + 1, context=self.context)
        except outbound.AddressRefused:
            raise FetchError("could not be fetched (its host is not a public address)") from None
        except TimeoutError:
            raise FetchError(f"took longer than {timeout:g} s") from None
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise FetchError(f"could not be fetched ({type(exc).__name__})") from None
        if answer.status != 200:
            raise FetchError(f"answered HTTP {answer.status}")
        if len(answer.body) > max_bytes:
            raise FetchError(f"is larger than {max_bytes} bytes")
        return answer.body


class Certificates:
    """url → the certificate it serves, checked valid now; the last
    ``CACHE_SIZE`` kept until they expire. Thread-safe."""

    def __init__(self, fetcher: Fetcher | None = None, *, clock: Callable[[], datetime] | None = None):
        self.fetcher = fetcher or HttpsFetcher()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._failed: OrderedDict[str, tuple[datetime, str]] = OrderedDict()  # url → (until, why)
        self._lock = threading.Lock()

    def __call__(self, url: str) -> x509.Certificate:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and _valid(cached, now):
                self._cache.move_to_end(url)
                return cached
            failed = self._failed.get(url)
            if failed is not None and now < failed[0]:
                raise FetchError(f"{failed[1]} (not tried again before {failed[0]:%H:%M:%S} UTC)")
        try:
            certificate = self._fetch(url, now=now)
        except FetchError as exc:
            with self._lock:
                self._failed[url] = (now + FAILED_FOR, str(exc))
                self._failed.move_to_end(url)
                while len(self._failed) > FAILED_SIZE:
                    self._failed.popitem(last=False)
            raise
        with self._lock:
            self._failed.pop(url, None)
            self._cache[url] = certificate
            self._cache.move_to_end(url)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return certificate

    def _fetch(self, url: str, *, now: datetime) -> x509.Certificate:
        body = self.fetcher(url, max_bytes=MAX_CERT_BYTES, timeout=FETCH_SECONDS)
        if len(body) > MAX_CERT_BYTES:
            raise FetchError(f"is larger than {MAX_CERT_BYTES} bytes")
        try:
            certificate = x509.load_pem_x509_certificate(body)
        except ValueError:
            raise FetchError("is not a PEM certificate") from None
        if not _valid(certificate, now):
            raise FetchError("is a certificate that is not valid now")
        return certificate

    def __len__(self) -> int:
        return len(self._cache)


def _valid(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
