"""Who may do what on the web: admin sessions, CSRF tokens, throttled
logins and API bearer tokens.

Sessions are Starlette's signed cookies (HttpOnly, SameSite=Lax, Secure when
the public URL is https). Every form carries the session's CSRF token; only
the RFC 8058 one-click unsubscribe POST is exempt, because mail providers
send it without cookies (its signed link is its authority).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import FormData

from dispatch import admins, db
from dispatch.models import AdminUser, utcnow

CSRF_FIELD = "csrf_token"
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


def current_admin(request: Request) -> Admin:
    """A dependency for every admin page: the signed-in admin, who must still exist."""
    admin_id = request.session.get("admin_id")
    if admin_id is not None:
        with db.session_scope(request.app.state.engine) as session:
            row = session.get(AdminUser, admin_id)
            if row is not None:
                return Admin(id=row.id, username=row.username)
        request.session.pop("admin_id", None)
    raise LoginRequired(request.url.path if request.method == "GET" else "/admin")


def sign_in(request: Request, admin: AdminUser) -> None:
    # A new CSRF token at sign-in: one planted before login is worth nothing after.
    request.session.clear()
    request.session["admin_id"] = admin.id
    csrf_token(request)


class Throttle:
    """Counts events (failed sign-ins, subscribe requests) per client address
    and per name (username, email address) in a sliding window, and says how
    long to wait once either count is full.

    Kept in memory: a restart forgets it, and several web processes each
    count their own. That is enough to make guessing passwords, or mailing
    confirmations to a stranger, slow; it is not an account lockout (which
    would let anyone lock an admin out).
    """

    def __init__(self, *, limit: int = 5, window: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, client: str, name: str) -> tuple[str, str]:
        return f"ip:{client}", f"name:{name.strip().lower()}"

    def retry_after(self, client: str, name: str) -> float:
        """Seconds until another try is allowed; 0 if allowed now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(client, name):
                times = self._events.get(key)
                if not times:
                    continue
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= self.limit:
                    wait = max(wait, times[0] + self.window - now)
        return wait

    def refuse_if_full(self, client: str, name: str, *, what: str) -> None:
        """Raise 429 with Retry-After while either count is full."""
        wait = self.retry_after(client, name)
        if wait:
            raise HTTPException(429, f"Too many {what}. Try again in {int(wait // 60) + 1} minute(s).",
                                headers={"Retry-After": str(int(wait) + 1)})

    def record(self, client: str, name: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(client, name):
                self._events.setdefault(key, deque()).append(now)

    def forget(self, name: str) -> None:
        """A successful sign-in clears the name's count (not the address's)."""
        with self._lock:
            self._events.pop(self._keys("", name)[1], None)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


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
