"""Who may do what on the web: admin sessions, CSRF tokens, throttled
logins and API bearer tokens.

Sessions are Starlette's signed cookies (HttpOnly, SameSite=Lax, Secure when
the public URL is https). Every form carries the session's CSRF token; only
the RFC 8058 one-click unsubscribe POST is exempt, because mail providers
send it without cookies (its signed link is its authority).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import FormData

from dispatch import admins, db
from dispatch.models import AdminUser, utcnow

CSRF_FIELD = "csrf_token"
LOGIN_KEY_CHARS = 200  # usernames have at most 100
CSRF_HEADER = "x-csrf-token"


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def submitted_form(request: Request) -> FormData:
    """The posted form, read on the event loop; handlers that take it can be
    plain functions, which FastAPI runs in its thread pool, so the database
    and SMTP work they do never blocks other requests."""
    return await request.form()


def check_csrf(request: Request, form: FormData) -> None:
    """The submitted token must be the session's."""
    expected = request.session.get("csrf")
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise HTTPException(403, "This form has expired or did not come from this site. "
                                 "Go back, reload the page and try again.")


async def require_csrf(request: Request) -> None:
    """A dependency for every form POST."""
    check_csrf(request, await request.form())


class LoginRequired(Exception):
    """Raised for an anonymous request to an admin page; answered with a redirect to the login page."""

    def __init__(self, next_path: str):
        self.next_path = next_path


@dataclass(frozen=True)
class Admin:
    id: int
    username: str
    role: str = "admin"

    def may(self, permission: str) -> bool:
        """For pages: show only what this role may do."""
        from dispatch.desk import roles

        return roles.allows(self.role, roles.Permission(permission))


def current_admin(request: Request) -> Admin:
    """A dependency for every admin page: the signed-in admin, who must still
    exist and whose sessions must not have been ended since this one began.

    The cookie names the account's session nonce, not just its id: signing
    out, a new password or removal changes or drops the nonce, which ends
    every session of that account at once, and an account that later gets
    the same id (SQLite reuses ids) has a nonce of its own."""
    admin_id, nonce = request.session.get("admin_id"), request.session.get("admin_nonce")
    if admin_id is not None:
        if isinstance(nonce, str):
            with db.session_scope(request.app.state.engine) as session:
                row = session.get(AdminUser, admin_id)
                if row is not None and hmac.compare_digest(row.session_nonce, nonce):
                    return Admin(id=row.id, username=row.username, role=getattr(row.role, 'value', row.role))
        request.session.clear()
    raise LoginRequired(request.url.path if request.method == "GET" else "/admin")


def sign_in(request: Request, admin: AdminUser) -> None:
    # A new CSRF token at sign-in: one planted before login is worth nothing after.
    request.session.clear()
    request.session["admin_id"] = admin.id
    request.session["admin_nonce"] = admin.session_nonce
    csrf_token(request)


def sign_out(request: Request, admin: Admin) -> None:
    """End this session and every other session of the same admin."""
    with db.session_scope(request.app.state.engine) as session:
        admins.end_sessions(session, admin.id)
    request.session.clear()


class Throttle:
    """Counts events (failed sign-ins, subscribe requests) per key in a
    sliding window, and says how long to wait once a key's count is full.

    Callers choose the keys: sign-ins count per (client, username) and per
    client, never per username alone, so that nobody elsewhere can lock the
    rightful admin out by failing on purpose. Kept in memory: a restart
    forgets it, and several web processes each count their own.
    """

    def __init__(self, *, limit: int = 5, window: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until another event for ``key`` is allowed; 0 if allowed now."""
        with self._lock:
            return self._wait(key, self.clock())

    def _wait(self, key: str, now: float) -> float:
        times = self._events.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._events[key]  # idle keys go, so memory follows the active ones
            return 0.0
        return max(0.0, times[0] + self.window - now) if len(times) >= self.limit else 0.0

    def record(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            self._events.setdefault(key, deque()).append(now)

    def take(self, key: str) -> float:
        """Check and count in one step: 0 if this event is allowed (and now
        counted), else the seconds to wait. Concurrent requests cannot all
        pass a check that none of them has counted yet."""
        now = self.clock()
        with self._lock:
            wait = self._wait(key, now)
            if not wait:
                self._events.setdefault(key, deque()).append(now)
            return wait

    def forget(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


def refuse_if_full(*checks: tuple[Throttle, str], what: str, take: bool = False) -> None:
    """Raise 429 with Retry-After while any (throttle, key) is full; with
    ``take``, count this event against each as it passes."""
    wait = max((throttle.take if take else throttle.retry_after)(key) for throttle, key in checks)
    if wait:
        raise HTTPException(429, f"Too many {what}. Try again in {int(wait // 60) + 1} minute(s).",
                            headers={"Retry-After": str(int(wait) + 1)})


def client_address(request: Request) -> str:
    """The client a throttle counts: the peer, or the address a trusted proxy
    forwarded (see DISPATCH_TRUSTED_PROXIES). IPv6 clients count per /64,
    the block one subscriber line usually has, so that a new address from
    the same block is not a new client."""
    host = request.client.host if request.client else "?"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def login_keys(client: str, username: str) -> tuple[str, str]:
    """(client + username, client): the keys a failed sign-in counts against."""
    # Cut first: normalising is slow on long runs of combining marks, and no username is this long.
    name = unicodedata.normalize("NFKC", username[:LOGIN_KEY_CHARS]).strip().casefold()
    return f"{client}|{name}", client


_bearer = HTTPBearer(auto_error=False, description="A token from `dispatch admin token NAME`.")


def api_client(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    """A dependency for every API route: the name of a valid token."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        with db.session_scope(request.app.state.engine) as session:
            token = admins.find_token(session, credentials.credentials)
            if token is not None:
                token.last_used_at = utcnow()
                return token.name
    raise HTTPException(401, "a valid API token is required (Authorization: Bearer <token>)",
                        headers={"WWW-Authenticate": "Bearer"})
