"""Admin users (for the web pages) and API tokens (for the JSON API).

Passwords are kept as Argon2id hashes (argon2-cffi, its default
parameters). API tokens are random and only their SHA-256 is stored: a
stolen database does not hand out working tokens, and a token can be looked
up by its hash in one indexed query.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from dispatch.errors import DispatchError, DuplicateError, FieldError, NotFoundError
from dispatch.models import AdminUser, ApiToken, Role, utcnow

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
MIN_PASSWORD_SCORE = 3  # zxcvbn: "safely unguessable: moderate protection from offline slow-hash attacks"
ZXCVBN_MAX_CHARS = 72
TOKEN_PREFIX = "dsp_"
# Fullmatched: one character class with a bounded count, so a match reads at
# most 101 characters of any input (dispatch/input_bounds.py).
_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,100}")
_NAME = re.compile(r"[A-Za-z0-9._ -]{1,100}")
_hasher = PasswordHasher()
VERIFY_SLOTS = 2  # one per core of the machines this runs on
VERIFY_WAIT_SECONDS = 10.0
_verify_slots = threading.BoundedSemaphore(VERIFY_SLOTS)


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so that a wrong username
    takes as long as a wrong password and does not tell which usernames exist.
    Made on first need, not at import: an Argon2 hash takes 64 MB and a
    quarter of a second, which every other command would pay."""
    return _hasher.hash("dispatch: no such user")


def check_username(username: str) -> str:
    username = username.strip()
    if not _USERNAME.fullmatch(username):
        raise FieldError("username", "1–100 letters, digits and . _ @ - only")
    return username


def check_password(password: str, *, username: str = "") -> str:
    """Long enough, and not guessable: zxcvbn (a well-kept strength estimator
    with common-password, keyboard-pattern, repeat and sequence dictionaries)
    must rate it at least ``MIN_PASSWORD_SCORE`` of 4, the username counting
    as a known word."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FieldError("password", f"at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise FieldError("password", f"at most {MAX_PASSWORD_LENGTH} characters")
    from zxcvbn import zxcvbn  # a second's import and its dictionaries: only where a password is set

    # Its matchers grow faster than linearly with length: rate the first
    # characters only (a strong prefix makes the whole strong).
    rating = zxcvbn(password[:ZXCVBN_MAX_CHARS], user_inputs=[username, "dispatch"])
    if rating["score"] < MIN_PASSWORD_SCORE:
        feedback = rating["feedback"]
        why = feedback.get("warning") or "it is too easy to guess"
        hint = " ".join(feedback.get("suggestions") or []) or "Use a few unrelated words, or a password manager."
        raise FieldError("password", f"too weak: {why.rstrip('.')}. {hint}")
    return password


def create_admin(session: Session, username: str, password: str, *, role: Role = Role.admin) -> AdminUser:
    username = check_username(username)
    if find_admin(session, username) is not None:
        raise DuplicateError(f"admin {username!r} exists already (use --reset-password to change the password)")
    admin = AdminUser(username=username, role=Role(role),
                      password_hash=_hasher.hash(check_password(password, username=username)))
    session.add(admin)
    session.flush()
    return admin


def set_password(session: Session, username: str, password: str) -> AdminUser:
    admin = find_admin(session, username)
    if admin is None:
        raise NotFoundError(f"no admin {username!r}")
    admin.password_hash = _hasher.hash(check_password(password, username=admin.username))
    admin.session_nonce = _new_nonce()  # a new password ends every session of the old one
    session.flush()
    return admin


def end_sessions(session: Session, admin_id: int) -> None:
    """Every session of this admin ends: the cookies name a nonce that is gone."""
    admin = session.get(AdminUser, admin_id)
    if admin is not None:
        admin.session_nonce = _new_nonce()
        session.flush()


def _new_nonce() -> str:
    return secrets.token_urlsafe(32)


def find_admin(session: Session, username: str) -> AdminUser | None:
    return session.exec(select(AdminUser).where(AdminUser.username == username.strip())).first()


def list_admins(session: Session) -> list[AdminUser]:
    return list(session.exec(select(AdminUser).order_by(col(AdminUser.username))).all())


def set_role(session: Session, username: str, role: Role) -> AdminUser:
    admin = find_admin(session, username)
    if admin is None:
        raise NotFoundError(f"no admin {username!r}")
    admin.role = Role(role)
    session.flush()
    return admin


def remove_admin(session: Session, username: str) -> None:
    admin = find_admin(session, username)
    if admin is None:
        raise NotFoundError(f"no admin {username!r}")
    session.delete(admin)


def plausible_username(username: str) -> bool:
    return _USERNAME.fullmatch(username.strip()) is not None


def authenticate(session: Session, username: str, password: str) -> AdminUser | None:
    """The admin if the password is right, else None (never says which part was wrong)."""
    admin = find_admin(session, username) if plausible_username(username) else None
    if not verify(admin.password_hash if admin else None, password) or admin is None:
        return None
    record_sign_in(session, admin, password)
    return admin


class Busy(DispatchError):
    """Too many password checks at once: try again in a moment."""


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; None (no such user) takes as long as a
    wrong password. At most ``VERIFY_SLOTS`` run at once: each Argon2 check
    costs tens of MB and a core for a moment, so a burst of sign-ins waits
    here (and is refused as Busy after a while) instead of starving the
    server. Call it outside any database transaction."""
    if not _verify_slots.acquire(timeout=VERIFY_WAIT_SECONDS):
        raise Busy("The server is busy checking passwords; try again in a moment.")
    try:
        _hasher.verify(password_hash or _dummy_hash(), password[:MAX_PASSWORD_LENGTH])
    except (VerificationError, InvalidHashError):
        return False
    finally:
        _verify_slots.release()
    return password_hash is not None


def record_sign_in(session: Session, admin: AdminUser, password: str) -> None:
    if _hasher.check_needs_rehash(admin.password_hash):
        admin.password_hash = _hasher.hash(password)
    admin.last_login_at = utcnow()
    session.flush()


# --- API tokens --------------------------------------------------------------

def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, *, role: Role = Role.admin) -> tuple[ApiToken, str]:
    """A new token: the stored row, and the token itself (shown once, never stored)."""
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise FieldError("name", "1–100 letters, digits, spaces and . _ - only")
    if session.exec(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise DuplicateError(f"an API token named {name!r} exists already")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=_digest(token), role=Role(role))
    session.add(row)
    session.flush()
    return row, token


def find_token(session: Session, token: str) -> ApiToken | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    return session.exec(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(col(ApiToken.name))).all())


def revoke_token(session: Session, name: str) -> None:
    row = session.exec(select(ApiToken).where(ApiToken.name == name.strip())).first()
    if row is None:
        raise NotFoundError(f"no API token named {name!r}")
    session.delete(row)
