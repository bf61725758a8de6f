"""One HTTP request to a URL someone typed or sent (an event webhook, a
Slack incoming webhook, an SNS certificate or SubscribeURL): to an address
checked first, within one total deadline, reading a bounded answer.

urllib's ``timeout`` is per socket operation: a server that answers a byte
at a time every few seconds holds the caller for as long as it likes. Here
every socket operation (DNS lookup, connect, TLS handshake, send, each read)
gets what is left of one deadline, so the whole POST ends when it runs out.

The URL's host is resolved once, every address it resolves to is checked,
and the connection goes to a checked address (never resolved again): a
name that answers with a public address for the check and a private one
for the connection (DNS rebinding) reaches nothing. Private, loopback,
link-local (cloud metadata, 169.254.169.254), shared, reserved, multicast
and unique-local (fd00::/8) addresses are refused, as is any IPv6 address
that embeds one (IPv4-mapped, 6to4, NAT64, Teredo), unless the operator
lists their network in ``DISPATCH_OUTBOUND_PRIVATE_NETWORKS`` (a receiver
on the internal network; tests list 127.0.0.1/32 themselves).

No redirect is followed (http.client follows none), and no proxy from the
environment is used: the connection goes to the checked address.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

SETTING = "DISPATCH_OUTBOUND_PRIVATE_NETWORKS"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(ValueError):
    """The URL's host is (or resolves to) an address dispatch does not post to."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes  # at most what the caller asked for


def networks(entries: Iterable[str | Network]) -> tuple[Network, ...]:
    """The allowed private networks from their text (``127.0.0.1/32``)."""
    return tuple(e if isinstance(e, (ipaddress.IPv4Network, ipaddress.IPv6Network))
                 else ipaddress.ip_network(str(e).strip(), strict=False) for e in entries)


def _embedded(ip: Address) -> list[Address]:
    """The address and any IPv4 address an IPv6 one carries inside it."""
    found: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if inner is not None:
                found.append(inner)
        if ip in _NAT64:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_problem(ip: Address, allowed: Iterable[Network] = ()) -> str | None:
    """Why dispatch does not post to ``ip``, or None."""
    allowed = tuple(allowed)
    if any(ip in net for net in allowed if net.version == ip.version):
        return None
    for each in _embedded(ip):
        if any(each in net for net in allowed if net.version == each.version):
            continue
        if not each.is_global or each.is_multicast:
            kind = ("a loopback" if each.is_loopback else "a link-local (cloud metadata)" if each.is_link_local
                    else "a multicast" if each.is_multicast else "a private or reserved")
            return (f"{ip} is {kind} address; to post to an internal host, list its network "
                    f"in {SETTING}")
    return None


class _Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the POST ran out of time")
        return remaining


class _DeadlineMixin:
    """Every socket operation gets what is left of the deadline."""

    deadline: _Deadline

    def recv_into(self, *args, **kwargs):
        self.settimeout(self.deadline.left())
        return super().recv_into(*args, **kwargs)

    def recv(self, *args, **kwargs):
        self.settimeout(self.deadline.left())
        return super().recv(*args, **kwargs)

    def read(self, *args, **kwargs):  # TLS sockets only: what their recv and recv_into call
        self.settimeout(self.deadline.left())
        return super().read(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        self.settimeout(self.deadline.left())
        return super().sendall(*args, **kwargs)

    def send(self, *args, **kwargs):
        self.settimeout(self.deadline.left())
        return super().send(*args, **kwargs)


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int, *, timeout: float) -> list[tuple[int, Address]]:
    """Every (family, address) ``host`` resolves to; the lookup is bounded
    by ``timeout`` (the system resolver has no timeout of its own we can set)."""
    literal = _literal(host)
    if literal is not None:
        return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, literal)]
    result: list = []

    def look_up() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=look_up, name="resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise TimeoutError(f"looking up {host} took longer than {timeout:.0f} s")
    if isinstance(result[0], OSError):
        raise result[0]
    found: list[tuple[int, Address]] = []
    for family, _, _, _, sockaddr in result[0]:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if (family, ip) not in found:
            found.append((family, ip))
    return found


def checked_addresses(host: str, port: int, *, allowed: Iterable[Network], timeout: float
                      ) -> list[tuple[int, Address]]:
    """What ``host`` resolves to, every address checked; AddressRefused if any is not allowed."""
    found = resolve(host, port, timeout=timeout)
    for _, ip in found:
        problem = address_problem(ip, allowed)
        if problem:
            raise AddressRefused(f"{host} resolves to {problem}" if _literal(host) is None else problem)
    return found


def url_address_problem(url: str, *, allowed: Iterable[Network], timeout: float = 3.0) -> str | None:
    """For a URL being stored: why its host's addresses are refused, or None.
    A name that does not resolve (yet) is let through: it is checked again,
    and connected to only once checked, before every POST."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        checked_addresses(host, parts.port or (443 if parts.scheme.lower() == "https" else 80),
                          allowed=allowed, timeout=timeout)
    except AddressRefused as exc:
        return str(exc)
    except OSError:
        return None
    return None


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allowed: Iterable[Network] = (),
         max_answer: int = 0, context: ssl.SSLContext | None = None) -> Answer:
    """POST ``body`` to ``url`` within ``timeout`` seconds in all, reading at
    most ``max_answer`` bytes of the answer. Raises AddressRefused (the
    address is not allowed: permanent), TimeoutError, or another OSError /
    http.client.HTTPException when there is no answer."""
    return request("POST", url, body, headers, timeout=timeout, allowed=allowed, max_answer=max_answer,
                   context=context)


def request(method: str, url: str, body: bytes | None, headers: dict[str, str], *, timeout: float,
            allowed: Iterable[Network] = (), max_answer: int = 0, context: ssl.SSLContext | None = None) -> Answer:
    """``post`` for any method (a GET has no ``body``)."""
    deadline = _Deadline(timeout)
    parts = urlsplit(url)
    https = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    addresses = checked_addresses(host, port, allowed=allowed, timeout=deadline.left())
    sock = _connect(addresses, port, deadline)
    conn: http.client.HTTPConnection | None = None
    try:
        if https:
            tls = context or ssl.create_default_context()
            tls.sslsocket_class = _DeadlineSSLSocket
            sock.settimeout(deadline.left())
            sock = tls.wrap_socket(sock, server_hostname=host)
            sock.deadline = deadline
            conn = http.client.HTTPSConnection(host, port, context=tls)
        else:
            conn = http.client.HTTPConnection(host, port)
        conn.sock = sock  # connected to the checked address: http.client does not connect again
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=headers)
        with conn.getresponse() as response:
            answer = response.read(max_answer) if max_answer > 0 else b""
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, answer)
    finally:
        if conn is not None:
            conn.close()
        sock.close()


def _connect(addresses: list[tuple[int, Address]], port: int, deadline: _Deadline) -> socket.socket:
    error: OSError | None = None
    for family, ip in addresses:
        sock = _DeadlineSocket(family, socket.SOCK_STREAM)
        sock.deadline = deadline
        try:
            sock.settimeout(deadline.left())
            sock.connect((str(ip), port))
            return sock
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError) and deadline.end <= time.monotonic():
                break
    raise error or OSError("no address to connect to")
