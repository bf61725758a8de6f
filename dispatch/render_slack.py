"""Digest → Slack Block Kit messages, within every limit Slack enforces.

Limits (api.slack.com/reference/block-kit): 50 blocks per message, 3,000
characters per section text, 150 per header. Counted here in UTF-16 code
units, which is never less than Slack's count, so emoji cannot push a text
over. A long digest becomes several messages in order, never a rejected one.

Text is shown as written. SITREP text and names go only into plain_text
objects and rich_text elements, never into mrkdwn, so ``*``, ``_``, ``~`` and
backticks stay characters, not formatting. Plain text is still escaped (&, <,
>: Slack decodes those three entities everywhere), so "<!channel>" or a fake
"<https://…|link>" in a SITREP shows as text and pings or links nobody. A
rich_text element is structure, not markup: its text is taken as it is.

Each message opens with a context line ("Daily briefing · part 1 of 3"),
and each SITREP title links to its archive page (when the archive is on).
A FLASH opens each message with a header block ("FLASH: <title>") above
that line, and its fallback text leads with "FLASH: ".
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment

from dispatch import links
from dispatch.digest import Digest, DigestItem
from dispatch.render import analyst_label, build_environment, longdate, one_line

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_FALLBACK = 3000
MAX_CONTEXT = 2000  # characters per context element
MAX_LINK_TEXT = 150  # our own bound for a linked title: a title line, not a paragraph
CADENCE_NAMES = {"daily": "Daily briefing", "weekly": "Weekly briefing", "immediate": "Briefing"}
FLASH_LABEL = "FLASH"


@dataclass(frozen=True)
class SlackMessage:
    text: str  # the plain-text fallback for notifications and screen readers
    blocks: tuple[dict, ...]
    # The SITREPs this message shows: kept in the receipt, so a correction
    # updates the very message that carried its SITREP (dispatch.desk.corrections).
    sitrep_ids: tuple[int, ...] = ()


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


def plain(text: str) -> dict:
    return {"type": "plain_text", "text": text, "emoji": False}


def _sections(text: str, *, continuation: str = "") -> list[dict]:
    return [{"type": "section", "text": plain(piece)} for piece in split_text(text, continuation=continuation)]


def title_block(title: str, url: str | None) -> dict:
    """The title in bold, linked to its archive page: a rich_text element,
    so the title's own characters are never read as markup."""
    text = truncate(one_line(title), MAX_LINK_TEXT)
    element = ({"type": "link", "url": url, "text": text, "style": {"bold": True}} if url
               else {"type": "text", "text": text, "style": {"bold": True}})
    return {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [element]}]}


def intro_block(label: str, *, part: int, parts: int) -> dict:
    text = label + (f" · part {part} of {parts}" if parts > 1 else "")
    return {"type": "context", "elements": [plain(truncate(escape_mrkdwn(one_line(text)), MAX_CONTEXT))]}


def flash_header(titles: list[str]) -> dict:
    """The header of a FLASH message: plain text, so nothing in a title is markup."""
    return {"type": "header", "text": plain(truncate(f"{FLASH_LABEL}: " + escape_mrkdwn(one_line(" | ".join(titles))),
                                                     MAX_HEADER))}


def sitrep_blocks(item: DigestItem, *, url: str | None = None) -> list[dict]:
    s = item.sitrep
    blocks: list[dict] = [
        title_block(s.title, url),
        {"type": "context", "elements": [plain(truncate(
            escape_mrkdwn(f"{longdate(s.event_date)} · {', '.join(s.region_names)}"), MAX_CONTEXT))]},
    ]
    bullets = "\n".join(f"• {escape_mrkdwn(b)}" for b in s.summary)
    blocks += _sections(f"What has happened\n{bullets}")
    for index, dq in enumerate(item.quotes):
        who = escape_mrkdwn(analyst_label(dq.quote)) + ("  ⭐ you follow" if dq.followed else "")
        heading = "Why it matters\n" if index == 0 else ""
        blocks += _sections(f"{heading}“{escape_mrkdwn(dq.quote.text)}”\n— {who}")
    return blocks


class SlackRenderer:
    def __init__(self, *, environment: Environment | None = None, brand: str = "",
                 archive: links.ArchiveLinks | None = None):
        self.env = environment or build_environment()
        self._text = self.env.get_template("slack/text.j2")
        self.brand = brand
        self.archive = archive or links.ArchiveLinks("", "", mode="off")

    def render(self, digest: Digest) -> SlackContent:
        flash = digest.flash
        room = MAX_BLOCKS - 1 - flash  # each message opens with its intro line (a FLASH's with a header too)
        groups: list[tuple[list[str], list[dict], list[int]]] = []  # (titles, blocks, SITREP ids) per message
        for item in digest.items:
            blocks = sitrep_blocks(item, url=self.archive.sitrep(item.sitrep.id))
            title = item.sitrep.title
            if groups and len(groups[-1][1]) + 1 + len(blocks) <= room:
                groups[-1][0].append(title)
                groups[-1][1].extend([{"type": "divider"}, *blocks])
                groups[-1][2].append(item.sitrep.id)
                continue
            for start in range(0, len(blocks), room):  # one SITREP may need several
                groups.append(([title], blocks[start:start + room], [item.sitrep.id]))
        kind = FLASH_LABEL if flash else CADENCE_NAMES.get(digest.recipient.cadence, "Briefing")
        label = " · ".join(p for p in (self.brand, kind) if p)
        messages = []
        for part, (titles, blocks, ids) in enumerate(groups, start=1):
            text = self._text.render(count=len(titles), titles=[escape_mrkdwn(one_line(t)) for t in titles],
                                     part=part, parts=len(groups), flash=flash)
            lead = (flash_header(titles), intro_block(label, part=part, parts=len(groups))) if flash else \
                (intro_block(label, part=part, parts=len(groups)),)
            messages.append(SlackMessage(text=truncate(text.strip(), MAX_FALLBACK), blocks=(*lead, *blocks),
                                         sitrep_ids=tuple(ids)))
        return SlackContent(messages=tuple(messages))
