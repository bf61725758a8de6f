"""``subscribers.check_email`` for many addresses at once: each distinct
domain is checked by email_validator once, not once per reader.

A 100,000-row import spends most of its email checking on the domain
(IDNA, UTS #46 character by character), and such a list has a handful of
domains. The answer here is exactly ``check_email``'s for every address:

- an address whose part before the last "@" is a plain ASCII dot-atom
  (what email_validator passes through unchanged, outside strict mode),
  not one of the mailbox names it lowercases, gets its domain's cached
  result, and the lengths email_validator checks are checked on the result;
- anything else — quoting, a display name, non-ASCII before the "@", a
  domain that is refused, any length over a limit — goes to
  ``check_email`` itself, so every refusal is its own, word for word.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH

from dispatch import subscribers

# email_validator's DOT_ATOM_TEXT over ASCII atext (rfc_constants.ATEXT),
# linear: each dot must be followed by at least one atext character.
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN_LOCAL = re.compile(f"[{_ATEXT}]+(?:\\.[{_ATEXT}]+)*")
_LOWERED = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
MAX_DOMAINS = 10_000  # distinct domains remembered; a hostile file cannot grow the cache without bound
_REFUSED = ("", "")


def check(address: str, *, domains: dict[str, tuple[str, str]]) -> str:
    """The normalised address, as ``subscribers.check_email`` gives it (or
    its FieldError); ``domains`` remembers each domain's result between calls."""
    text = address.strip()
    if (len(text) > subscribers.MAX_EMAIL_CHARS or "\r" in address or "\n" in address
            or len(text.encode("utf-8", "surrogatepass")) > EMAIL_MAX_LENGTH):
        return subscribers.check_email(address)
    local, at, domain = text.rpartition("@")
    if not at or local.lower() in _LOWERED or not _PLAIN_LOCAL.fullmatch(local):
        return subscribers.check_email(address)
    known = domains.get(domain)
    if known is None:
        known = _domain(domain)
        if len(domains) >= MAX_DOMAINS:
            domains.clear()
        domains[domain] = known
    normal, ascii_domain = known
    if not normal:
        return subscribers.check_email(address)  # refused: check_email says why
    result = f"{local}@{normal}"
    if max(len(result.encode("utf-8")), len(local) + 1 + len(ascii_domain)) > EMAIL_MAX_LENGTH:
        return subscribers.check_email(address)
    return result


def _domain(domain: str) -> tuple[str, str]:
    """(normalised domain, its IDNA ASCII form), or _REFUSED."""
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return _REFUSED
    return checked.domain, checked.ascii_domain
