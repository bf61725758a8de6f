"""Digest → what is sent: EmailContent (subject, text, HTML with inlined CSS)
and SlackContent (Block Kit messages within Slack's limits).

One Jinja2 environment, built once: templates compile once and are reused.
A user's templates folder (setting ``templates_dir``) overrides any shipped
template by name.

Fan-out. Readers who get the same SITREPs in the same format get the same
body; only a few personal values differ (greeting, links, why they get it).
``EmailRenderer.shared`` renders a body once with markers in place of those
values, and ``personalise`` fills them in: the result is byte for byte what
``EmailRenderer.render`` gives for that reader alone.

The markers hold a random token made afresh for each shared rendering, after
the content exists: SITREP text cannot contain it, so no text that looks
like a marker (``@@dispatch:unsubscribe_url@@`` or any other) is ever taken
for one. Content is content.
"""

from __future__ import annotations

import secrets
import textwrap
from dataclasses import dataclass
from functools import cached_property, lru_cache
from datetime import date
from pathlib import Path

import css_inline
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from dispatch import email_shape, links
from dispatch.digest import Digest, Quote, Recipient

SHIPPED_TEMPLATES = next(
    (p for p in (Path(__file__).parent / "templates", Path(__file__).parent.parent / "templates") if p.is_dir()),
    Path(__file__).parent / "templates",
)
PERSONAL_FIELDS = ("greeting", "reason", "reason_text", "preferences_url", "unsubscribe_url", "view_url")
MAX_GREETING_NAME = 40  # a longer name is shortened in the greeting, which must stay one short line


def build_environment(templates_dir: Path | None = None) -> Environment:
    loaders = [FileSystemLoader(str(templates_dir))] if templates_dir else []
    loaders.append(FileSystemLoader(str(SHIPPED_TEMPLATES)))
    env = Environment(
        loader=ChoiceLoader(loaders),
        # select_autoescape matches name endings: "html.j2" must be listed itself.
        autoescape=select_autoescape(enabled_extensions=("html", "htm", "xml", "html.j2")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["wrap"] = wrap
    env.filters["longdate"] = longdate
    env.filters["analyst"] = analyst_label
    return env


@lru_cache(maxsize=4096)  # each bullet recurs in many digests; textwrap is slow
def wrap(text: str, width: int = 72, first: str = "", rest: str | None = None) -> str:
    return textwrap.fill(" ".join(str(text).split()), width=width, initial_indent=first,
                         subsequent_indent=first if rest is None else rest,
                         break_long_words=False, break_on_hyphens=False)


def longdate(value: date) -> str:
    return f"{value.day} {value.strftime('%B %Y')}"


def analyst_label(quote: Quote) -> str:
    return " ".join(part for part in (quote.analyst_title, quote.analyst_name) if part)


one_line = email_shape.one_line


def subject_for(digest: Digest) -> str:
    return email_shape.subject([item.sitrep.title for item in digest.items], flash=digest.flash)


def reason_for(recipient: Recipient, *, short: bool = False) -> str:
    return _reason(recipient.region_names, recipient.analyst_names, short)


@lru_cache(maxsize=1024)  # many readers follow the same regions and analysts
def _reason(region_names: tuple[str, ...], analyst_names: tuple[str, ...], short: bool) -> str:
    regions = ", ".join(region_names) if region_names else "all regions"
    analysts = ", ".join(analyst_names) if analyst_names else "all analysts"
    if short:  # the plain-text line: most readers' fits in 76 columns unwrapped
        return f"You follow {regions}, from {analysts}."
    return f"You receive this because you follow {regions}, from {analysts}."


@lru_cache(maxsize=1024)
def _reasons(region_names: tuple[str, ...], analyst_names: tuple[str, ...]) -> tuple[str, str]:
    """The HTML reason and the plain-text one, wrapped: the same for every reader of the same choices."""
    return _reason(region_names, analyst_names, False), wrap(_reason(region_names, analyst_names, True), 76)


@lru_cache(maxsize=4096)
def _greeting(name: str) -> str:
    name = email_shape.shorten(name, MAX_GREETING_NAME)
    return f"Hello {name}," if name else "Hello,"


@dataclass(frozen=True)
class Personal:
    greeting: str
    reason: str
    preferences_url: str
    unsubscribe_url: str
    view_url: str = ""  # this delivery's web version ("View in browser")
    reason_text: str = ""  # ``reason`` wrapped for the plain-text part; made from it when not given

    def __post_init__(self):
        if not self.reason_text:
            object.__setattr__(self, "reason_text", wrap(self.reason, 76))

    @classmethod
    def for_recipient(cls, recipient: Recipient, *, preferences_url: str, unsubscribe_url: str,
                      view_url: str = "") -> Personal:
        reason, reason_text = _reasons(recipient.region_names, recipient.analyst_names)
        return cls(greeting=_greeting(recipient.name), reason=reason, reason_text=reason_text,
                   preferences_url=preferences_url, unsubscribe_url=unsubscribe_url, view_url=view_url)


class _Markers:
    """Stands in for Personal while a shared body renders: each value is
    ``<token><field name><token>``, so splitting the output at the token
    gives literal, name, literal, …, literal. The token is hex (html5ever
    and Jinja2 pass it through unchanged) and new for every rendering."""

    def __init__(self):
        self.token = secrets.token_hex(16)

    def __getattr__(self, name: str) -> Markup:
        if name not in PERSONAL_FIELDS:
            raise AttributeError(name)
        return Markup(f"{self.token}{name}{self.token}")

    def cut(self, rendered: str) -> tuple[str, ...]:
        pieces = tuple(rendered.split(self.token))
        if len(pieces) % 2 == 0 or any(name not in PERSONAL_FIELDS for name in pieces[1::2]):
            # Only a template that alters a marker (a filter on a personal value) can get here.
            raise ValueError("a template changed a personal value; use personal.* as they are")
        return pieces


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str | None  # None: the reader asked for plain text
    preferences_url: str
    unsubscribe_url: str
    # The SMTP envelope sender (VERP return path, links.return_path) or None
    # for the From address: adapters know no database, so it comes with the content.
    envelope_from: str | None = None


@dataclass(frozen=True)
class SharedEmail:
    """A body shared by many readers, its text and HTML split where a
    personal value goes: literal, field name, literal, …, literal."""

    subject: str
    text_pieces: tuple[str, ...]
    html_pieces: tuple[str, ...] | None


# What html5ever (inside css-inline) writes when it serialises the document:
# personal values filled in after inlining must be escaped the same way.
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\u00a0": "&nbsp;"})
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", '"': "&quot;", "\u00a0": "&nbsp;"})
_URL_FIELDS = {"preferences_url", "unsubscribe_url", "view_url"}
_ESCAPED = "&<>\"\u00a0"  # any character either table changes


def _escaped(value: str, table: dict) -> str:
    """``value.translate(table)``; most values (signed links, plain names)
    hold nothing to escape, and looking for each character (a fast search
    apiece) is cheaper than translate, or a regular expression's scan."""
    for character in _ESCAPED:
        if character in value:
            return value.translate(table)
    return value


class EmailRenderer:
    def __init__(self, *, templates_dir: Path | None = None, brand: str = "Dispatch Briefing",
                 postal_address: str | None = None, max_full_items: int = 12,
                 archive: links.ArchiveLinks | None = None, environment: Environment | None = None):
        self.env = environment or build_environment(templates_dir)
        self.brand = brand
        self.postal_address = postal_address
        self.max_full_items = max_full_items
        self.archive = archive or links.ArchiveLinks("", "", mode="off")
        self._html = self.env.get_template("email/digest.html.j2")
        self._text = self.env.get_template("email/digest.txt.j2")
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)

    def _render(self, digest: Digest, personal) -> tuple[str, str, str | None]:
        """Subject, text, and HTML (None for a plain-text reader)."""
        subject = subject_for(digest)
        shape = email_shape.shape(digest.items, max_full=self.max_full_items)
        context = {"digest": digest, "subject": subject, "personal": personal, "brand": self.brand,
                   "flash": digest.flash,
                   "postal_address": self.postal_address, "shape": shape,
                   "contents": email_shape.contents(digest.items) if len(digest.items) > 1 else (),
                   "preheader": email_shape.preheader(digest.items, subject_line=subject),
                   "sitrep_url": self.archive.sitrep,
                   # Linked from the footer only when open to all: in readers mode a link
                   # without a token would be refused (the web version opens it instead).
                   "archive_url": self.archive.index() if self.archive.mode == "public" else None}
        text = self._text.render(context)
        html = self._inliner.inline(self._html.render(context)) if digest.recipient.format == "html" else None
        return subject, text, html

    def render(self, digest: Digest, personal: Personal) -> EmailContent:
        """One reader's email, rendered on its own."""
        subject, text, html = self._render(digest, personal)
        return EmailContent(subject=subject, text=text, html=html,
                            preferences_url=personal.preferences_url, unsubscribe_url=personal.unsubscribe_url)

    def shared(self, digest: Digest) -> SharedEmail:
        """The body every reader with this digest's ``body_key`` shares."""
        markers = _Markers()
        subject, text, html = self._render(digest, markers)
        return SharedEmail(subject=subject, text_pieces=markers.cut(text),
                           html_pieces=markers.cut(html) if html is not None else None)

    @staticmethod
    def personalise(shared: SharedEmail, personal: Personal, *, envelope_from: str | None = None) -> PersonalisedEmail:
        return PersonalisedEmail(shared, personal, envelope_from)


@dataclass(frozen=True)
class PersonalisedEmail:
    """One reader's email as a shared body plus their personal values.

    Reads like an EmailContent (``text`` and ``html`` are joined on first
    use, and equal what rendering alone gives), and lets the MIME builder
    splice the values into bytes it encoded once for the whole group.
    """

    shared: SharedEmail
    personal: Personal
    envelope_from: str | None = None  # as EmailContent.envelope_from

    @property
    def subject(self) -> str:
        return self.shared.subject

    @property
    def preferences_url(self) -> str:
        return self.personal.preferences_url

    @property
    def unsubscribe_url(self) -> str:
        return self.personal.unsubscribe_url

    @cached_property
    def text_values(self) -> dict[str, str]:
        return {name: getattr(self.personal, name) for name in PERSONAL_FIELDS}

    @cached_property
    def html_values(self) -> dict[str, str]:
        """The values as html5ever would have escaped them in the inlined document."""
        return {name: _escaped(value, _ATTR_ESCAPES if name in _URL_FIELDS else _TEXT_ESCAPES)
                for name, value in self.text_values.items()}

    @cached_property
    def text(self) -> str:
        return fill(self.shared.text_pieces, self.text_values)

    @cached_property
    def html(self) -> str | None:
        pieces = self.shared.html_pieces
        return fill(pieces, self.html_values) if pieces is not None else None

    def as_content(self) -> EmailContent:
        return EmailContent(subject=self.subject, text=self.text, html=self.html,
                            preferences_url=self.preferences_url, unsubscribe_url=self.unsubscribe_url,
                            envelope_from=self.envelope_from)


def fill(pieces: tuple, values: dict) -> str | bytes:
    """Join literal pieces with the values named between them (str or bytes alike)."""
    joined = list(pieces)
    joined[1::2] = [values[name] for name in pieces[1::2]]
    return joined[0][:0].join(joined)
