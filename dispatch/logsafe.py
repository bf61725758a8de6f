"""Log lines that carry no secret: signed reader links, webhook URLs, API and
Slack tokens and passwords in URLs are cut down to a short, stable stand-in.

A secret becomes its first few characters, an ellipsis and six hex digits of
its SHA-256 (``12-5b2…3f9a2c``): two different links still look different in
the log, and the same link looks the same on every line, but neither can be
used. The redaction is a Formatter wrapped around each handler's own, so it
sees the fully formatted line — message, arguments, traceback and all — and
no log call, now or later, can get a secret past it. ``configure`` sets up
the CLI's logging; ``install`` wraps the handlers of any loggers (uvicorn's).
With ``json_lines`` (DISPATCH_LOG_FORMAT=json) each record is one JSON object
on one line instead: time, level, logger and message, plus the fields a log
call passed as ``extra={"fields": {...}}`` (a delivery's id, address,
channel, window and outcome) as keys of their own; every string in it is
redacted the same way.

Every expression here sees request paths chosen by anyone, so each runs in
linear time: fixed prefixes, no nested or overlapping repetition, and
look-behinds that keep a match from starting inside a run it would rescan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Collection, Iterable

from dispatch import links
from dispatch.slack_webhooks import SLACK_HOSTS

ELLIPSIS = "…"
# Routes whose last segment is a signed link (links.link_path makes /<purpose>/<token>;
# /resubscribe/<token> takes an unsubscribe token).
# /view/<token>, /feeds/reader/<token>.atom: the archive's signed links (links.STATIC_PURPOSES).
LINK_ROUTES = tuple(sorted({*links.MAX_AGE, *links.STATIC_PURPOSES, "resubscribe"}))
SENSITIVE_QUERY = {"token", "access_token", "key", "api_key", "secret", "password", "passwd", "pwd", "pass",
                   "sig", "signature", "auth", "code", "t"}

_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s\"'<>\\`]+")
_LINK_PATH = re.compile(r"/(?:%s)/([^\s/?#\"'<>\\`]+)" % "|".join(map(re.escape, LINK_ROUTES)))
# links.make_token: <subscriber id>-<address tag>.<timestamp>.<signature>, anywhere in a line.
_SIGNED_TOKEN = re.compile(r"(?<![\w.-])\d{1,19}-[0-9a-f]{10}\.[\w-]{1,16}\.[\w-]{10,}")
_ARCHIVE_TOKEN = re.compile(r"/archive/\d{1,19}\?t=([\w.-]{1,200})")  # an email's SITREP link
_API_TOKEN = re.compile(r"(?<![\w-])dsp_([\w-]{6,})")  # admins.TOKEN_PREFIX
_SLACK_TOKEN = re.compile(r"(?<![\w-])xox[a-z]-([\w-]{6,})")
# links.verp_token in a return path: bounces+d<delivery>-<signature>@…
_VERP = re.compile(r"(?<=\+)[dD]\d{1,19}-([A-Za-z2-7]{6,})")
_BEARER = re.compile(r"(?i:\b(?:bearer|basic))[ \t]+([\w.~+/=-]{6,})")
# What each expression cannot match without: a rule whose guard finds
# nothing in the line cannot change it, so it is skipped. The look-behind
# that starts most expressions keeps the regex engine from searching for a
# literal first, and eight full scans cost some 40 µs a line, one line per
# delivery; the guards are substring tests or an expression that starts
# with a literal (a necessary part of the rule's own match).
_SIGNED_GUARD = re.compile(r"-[0-9a-f]{10}\.")
_GUARDS = {
    _LINK_PATH: lambda text, lower: "/" in text,
    _ARCHIVE_TOKEN: lambda text, lower: "/archive/" in text,
    _SIGNED_TOKEN: lambda text, lower: _SIGNED_GUARD.search(text) is not None,
    _API_TOKEN: lambda text, lower: "dsp_" in text,
    _SLACK_TOKEN: lambda text, lower: "xox" in text,
    _VERP: lambda text, lower: "+" in text,
    # Case-blind: no other character matches b, e, a or r, and nothing but
    # them lowers to them; "basic"'s s and i have look-alikes (ſ, ı, İ), so
    # only its "ba" is asked for.
    _BEARER: lambda text, lower: "bearer" in lower or "ba" in lower,
}
# (expression, the group that is the secret, its guard), in this order: the
# specific forms first, so a token has the same stand-in wherever it appears.
# The guard is taken along rather than looked up by pattern: a compiled
# pattern's hash is worked out afresh from its text on every lookup.
_RULES = tuple((expression, group, _GUARDS[expression]) for expression, group in (
    (_LINK_PATH, 1), (_ARCHIVE_TOKEN, 1), (_SIGNED_TOKEN, 0), (_API_TOKEN, 1), (_SLACK_TOKEN, 1), (_VERP, 1),
    (_BEARER, 1)))


def mask(secret: str) -> str:
    """The stand-in: enough to tell two secrets apart, nothing to use."""
    if ELLIPSIS in secret:  # already a stand-in
        return secret
    keep = min(6, len(secret) // 3)
    return secret[:keep] + ELLIPSIS + hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:6]


def _masked(match: re.Match, group: int) -> str:
    """The match with its secret group replaced by a stand-in, unless an
    earlier rule made a stand-in of it already (it ends at an ellipsis)."""
    whole, start, end = match.group(0), match.start(group) - match.start(0), match.end(group) - match.start(0)
    if match.string[match.end():match.end() + 1] == ELLIPSIS:
        return whole
    return whole[:start] + mask(whole[start:end]) + whole[end:]


def _looks_secret(segment: str) -> bool:
    """A long random-looking path segment (a webhook secret, a key in a URL)."""
    return (len(segment) >= 20 and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in segment)
            and any(ch.isdigit() for ch in segment) and any(ch.isalpha() for ch in segment))


class Redactor:
    def __init__(self, *, webhook_hosts: Collection[str] = ()):
        self.webhook_hosts = frozenset(h.lower() for h in (*SLACK_HOSTS, *webhook_hosts))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if "://" in text:
            text = _URL.sub(self._url, text)
        lower = None
        for expression, group, guard in _RULES:
            if expression is _BEARER:
                lower = text.lower()
            if guard(text, lower):
                text = expression.sub(lambda m, g=group: _masked(m, g), text)
        return text

    def _url(self, match: re.Match) -> str:
        url = match.group(0)
        scheme, _, rest = url.partition("://")
        cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        netloc, tail = rest[:cut], rest[cut:]
        userinfo, at, hostport = netloc.rpartition("@")
        if at and ":" in userinfo:
            user, _, password = userinfo.partition(":")
            netloc = f"{user}:***@{hostport}"
        host = hostport.rsplit(":", 1)[0] if not hostport.startswith("[") else hostport.split("]")[0] + "]"
        path, query_mark, query = tail.partition("?")
        path, hash_mark, fragment = path.partition("#") if not query_mark else (path, "", "")
        segments = path.split("/")
        last = max((i for i, s in enumerate(segments) if s), default=None)
        webhook = host.lower().strip("[]") in self.webhook_hosts
        segments = [mask(s) if s and ((webhook and i == last) or _looks_secret(s)) else s
                    for i, s in enumerate(segments)]
        if query_mark:
            query = "&".join(self._query_pair(pair) for pair in query.split("&"))
        return f"{scheme}://{netloc}{'/'.join(segments)}{hash_mark}{fragment}{query_mark}{query}"

    @staticmethod
    def _query_pair(pair: str) -> str:
        name, eq, value = pair.partition("=")
        return f"{name}={mask(value)}" if eq and value and name.lower() in SENSITIVE_QUERY else pair


class RedactingFormatter(logging.Formatter):
    """Formats with the handler's own formatter, then redacts the whole line."""

    def __init__(self, inner: logging.Formatter | None, redactor: Redactor):
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(self.inner.format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json.dumps escapes any line
    break inside a value), every string in it redacted."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        data: dict = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                      "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                data.setdefault(str(key), value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self._redacted(data), ensure_ascii=False, default=str)

    def _redacted(self, value):
        if isinstance(value, str):
            return self.redactor(value)
        if isinstance(value, dict):
            return {k: self._redacted(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redacted(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.redactor(str(value))

    converter = time.gmtime  # UTC, whatever the machine's zone: the "Z" above says so


_json_lines = False  # set by configure: uvicorn's loggers, set up later, follow it


def install(loggers: Iterable[logging.Logger], *, webhook_hosts: Collection[str] = (),
            json_lines: bool | None = None) -> None:
    """Wrap the formatter of every handler of these loggers (once), or with
    ``json_lines`` replace it with a JsonFormatter."""
    json_lines = _json_lines if json_lines is None else json_lines
    redactor = Redactor(webhook_hosts=webhook_hosts)
    for logger in loggers:
        for handler in logger.handlers:
            current = handler.formatter
            if json_lines:
                handler.setFormatter(JsonFormatter(redactor))
            elif isinstance(current, (RedactingFormatter, JsonFormatter)):
                current.redactor = redactor  # a later call may know more webhook hosts
            else:
                handler.setFormatter(RedactingFormatter(current, redactor))


LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(*, webhook_hosts: Collection[str] = (), level: int = logging.INFO, json_lines: bool = False) -> None:
    """The CLI's logging: one line per record on stderr, redacted; with
    ``json_lines``, one JSON object a line."""
    global _json_lines
    _json_lines = json_lines
    # Neither format names the calling function, file or line, and finding
    # them walks the stack on every record, one record per delivery: the
    # logging HOWTO's "Optimization" switch turns that off.
    logging._srcfile = None
    logging.basicConfig(level=level, stream=sys.stderr, format=LINE_FORMAT)
    install([logging.getLogger()], webhook_hosts=webhook_hosts, json_lines=json_lines)


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def install_on_uvicorn(*, webhook_hosts: Collection[str] = ()) -> None:
    """After uvicorn.Config has set up its loggers (it does so when built)."""
    install([logging.getLogger(name) for name in UVICORN_LOGGERS], webhook_hosts=webhook_hosts)
