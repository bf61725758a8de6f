"""Digest → Slack Block Kit messages, within every limit Slack enforces.

Limits (api.slack.com/reference/block-kit): 50 blocks per message, 3,000
characters per section text, 150 per header. Counted here in UTF-16 code
units, which is never less than Slack's count, so emoji cannot push a text
over. A long digest becomes several messages in order, never a rejected one.

SITREP text is escaped (&, <, >) in every text field, plain_text headers
included (Slack decodes those three entities everywhere), so "<!channel>" or
a fake "<https://…|link>" in a SITREP shows as text and pings or links nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment

from dispatch.digest import Digest, DigestItem
from dispatch.render import analyst_label, build_environment, longdate, one_line

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_FALLBACK = 3000


@dataclass(frozen=True)
class SlackMessage:
    text: str  # the plain-text fallback for notifications and screen readers
    blocks: tuple[dict, ...]


@dataclass(frozen=True)
class SlackContent:
    messages: tuple[SlackMessage, ...]


def escape_mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, limit: int) -> int:
    """Length of the longest prefix within ``limit`` that does not end
    inside an escape such as &amp;."""
    used = 0
    for index, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            break
    else:
        return len(text)
    amp = text.rfind("&", max(0, index - 5), index)
    if amp > 0 and ";" not in text[amp:index]:
        return amp
    return max(index, 1)


def truncate(text: str, limit: int) -> str:
    if slack_length(text) <= limit:
        return text
    return text[: _fit(text, limit - 1)].rstrip() + "…"


def split_text(text: str, limit: int = MAX_SECTION, *, continuation: str = "") -> list[str]:
    """Split at line breaks, then at spaces, so no piece exceeds ``limit``;
    never inside an escape such as &amp;. Later pieces start with ``continuation``."""
    pieces: list[str] = []
    current = ""
    for word in _words(text, limit - slack_length(continuation)):
        candidate = current + word
        if current and slack_length(candidate.rstrip()) > limit:
            pieces.append(current.rstrip())
            current = continuation + word.lstrip(" ")
        else:
            current = candidate
    if current.strip():
        pieces.append(current.rstrip())
    return pieces


def _words(text: str, hard_limit: int):
    """Tokens that keep their leading separator; a token longer than the
    limit (a very long word) is cut, avoiding the middle of an entity."""
    token = ""
    for ch in text:
        if ch in " \n" and token:
            yield from _cut(token, hard_limit)
            token = ""
        token += ch
    if token:
        yield from _cut(token, hard_limit)


def _cut(token: str, limit: int):
    while slack_length(token) > limit:
        cut = _fit(token, limit)
        yield token[:cut]
        token = token[cut:]
    yield token


def _sections(text: str, *, continuation: str = "") -> list[dict]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for piece in split_text(text, continuation=continuation)]


def sitrep_blocks(item: DigestItem) -> list[dict]:
    s = item.sitrep
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(escape_mrkdwn(one_line(s.title)), MAX_HEADER),
                                    "emoji": False}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(
            escape_mrkdwn(f"{longdate(s.event_date)} · {', '.join(s.region_names)}"), MAX_SECTION)}]},
    ]
    bullets = "\n".join(f"• {escape_mrkdwn(b)}" for b in s.summary)
    blocks += _sections(f"*What has happened*\n{bullets}")
    for index, dq in enumerate(item.quotes):
        quote = "\n>".join(escape_mrkdwn(dq.quote.text).split("\n"))
        who = escape_mrkdwn(analyst_label(dq.quote)) + ("  ⭐ _you follow_" if dq.followed else "")
        heading = "*Why it matters*\n" if index == 0 else ""
        blocks += _sections(f"{heading}>{quote}\n— *{who}*", continuation=">")
    return blocks


class SlackRenderer:
    def __init__(self, *, environment: Environment | None = None):
        self.env = environment or build_environment()
        self._text = self.env.get_template("slack/text.j2")

    def render(self, digest: Digest) -> SlackContent:
        groups: list[tuple[list[str], list[dict]]] = []  # (titles, blocks) per message
        for item in digest.items:
            blocks = sitrep_blocks(item)
            title = item.sitrep.title
            if groups and len(groups[-1][1]) + 1 + len(blocks) <= MAX_BLOCKS:
                groups[-1][0].append(title)
                groups[-1][1].extend([{"type": "divider"}, *blocks])
                continue
            for start in range(0, len(blocks), MAX_BLOCKS):  # one SITREP may need several
                groups.append(([title], blocks[start:start + MAX_BLOCKS]))
        messages = []
        for part, (titles, blocks) in enumerate(groups, start=1):
            text = self._text.render(count=len(titles), titles=[escape_mrkdwn(one_line(t)) for t in titles],
                                     part=part, parts=len(groups))
            messages.append(SlackMessage(text=truncate(text.strip(), MAX_FALLBACK), blocks=tuple(blocks)))
        return SlackContent(messages=tuple(messages))
