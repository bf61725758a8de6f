"""Correction and retraction notices as they are sent: a short email
("Correction: <title>", with what changed and the note), and the Slack
messages (the original post as updated in place, with its "Corrected" or
"Retracted" line, and the threaded reply or new post carrying the note).

SITREP text goes into plain_text objects only, escaped as in every Slack
message (dispatch.render_slack): a note is content, never markup.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime

import css_inline
from jinja2 import Environment

from dispatch import digest
from dispatch import render_slack as rs
from dispatch.desk import corrections
from dispatch.digest import Digest, Recipient, SitrepView
from dispatch.render import EmailContent, Personal, longdate, one_line, wrap

LABELS = {"correction": "Correction", "retraction": "Retraction"}
MAX_SLACK_DIFF_LINES = 20  # a thread reply stays short; the email and the web have the rest


@dataclass(frozen=True)
class Notice:
    """What a notice says, whatever the channel."""

    kind: str  # correction | retraction
    sitrep_id: int
    number: int
    title: str  # as the reader knows it now (a retraction: as it was)
    event_date: date
    note: str
    changes: tuple[corrections.Change, ...]
    at: datetime  # when the revision was approved
    url: str | None = None  # the SITREP's archive page, when there is one to read

    @property
    def subject(self) -> str:
        return one_line(f"{LABELS[self.kind]}: {self.title}")


class RevisionRenderer:
    def __init__(self, *, environment: Environment, brand: str, postal_address: str | None,
                 slack: rs.SlackRenderer):
        self.brand = brand
        self.postal_address = postal_address
        self._html = environment.get_template("email/revision.html.j2")
        self._text = environment.get_template("email/revision.txt.j2")
        self._slack = slack
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)

    # --- email ------------------------------------------------------------------------

    def email(self, notice: Notice, recipient: Recipient, personal: Personal) -> EmailContent:
        reason = "You receive this because you were sent this SITREP before it was " + \
                 ("corrected." if notice.kind == "correction" else "retracted.")
        personal = dataclasses.replace(personal, reason=reason, reason_text=wrap(reason, 76))
        changes, more = corrections.shown(list(notice.changes))
        context = {"kind": notice.kind, "title": notice.title, "event_date": notice.event_date, "note": notice.note,
                   "changes": changes, "more": more, "url": notice.url if notice.kind == "correction" else None,
                   "subject": notice.subject, "personal": personal, "brand": self.brand,
                   "postal_address": self.postal_address, "archive_url": None,
                   "preheader": f"{notice.note[:120]}"}
        text = self._text.render(context)
        html = self._inliner.inline(self._html.render(context)) if recipient.format == "html" else None
        return EmailContent(subject=notice.subject, text=text, html=html, preferences_url=personal.preferences_url,
                            unsubscribe_url=personal.unsubscribe_url)

    # --- Slack ------------------------------------------------------------------------

    def status_line(self, notice: Notice) -> dict:
        """The line an updated post opens with: "Corrected 3 December 2026 14:05 UTC: <note>"."""
        verb = "Corrected" if notice.kind == "correction" else "Retracted"
        text = f"{verb} {longdate(notice.at.date())} {notice.at:%H:%M} UTC: {one_line(notice.note)}"
        return {"type": "section", "text": rs.plain(rs.truncate(rs.escape_mrkdwn(text), rs.MAX_SECTION))}

    def updated_post(self, notice: Notice, recipient: Recipient, carried: list[SitrepView]) -> rs.SlackMessage:
        """The original message as it now reads: the status line, then the
        SITREPs it carried as they stand (a retracted one is gone from them)."""
        blocks: list[dict] = [self.status_line(notice)]
        if notice.kind == "retraction":
            blocks.append({"type": "context", "elements": [rs.plain(rs.truncate(rs.escape_mrkdwn(
                one_line(f"Withdrawn: {notice.title}. Please disregard it.")), rs.MAX_CONTEXT))]})
        if carried:
            built = Digest(recipient=recipient, window_key="revision",
                           items=tuple(_items(recipient, carried)))
            for message in self._slack.render(built).messages:
                blocks.extend(message.blocks[1:])  # each opens with its own intro line
        if len(blocks) > rs.MAX_BLOCKS:  # grown past one message: the thread reply links the rest
            blocks = blocks[:rs.MAX_BLOCKS - 1] + [{"type": "context", "elements": [rs.plain("…")]}]
        verb = "Corrected" if notice.kind == "correction" else "Retracted"
        return rs.SlackMessage(text=rs.truncate(rs.escape_mrkdwn(f"{verb}: {one_line(notice.title)}"),
                                                rs.MAX_FALLBACK), blocks=tuple(blocks))

    def note_message(self, notice: Notice) -> rs.SlackMessage:
        """The threaded reply (or, where no post can be updated, a new post):
        what happened, the note, and the lines that changed."""
        label = LABELS[notice.kind]
        head = f"{label} to “{one_line(notice.title)}”" if notice.kind == "correction" else \
            f"{label} of “{one_line(notice.title)}”: please disregard it"
        blocks: list[dict] = [rs.title_block(head, notice.url if notice.kind == "correction" else None)]
        blocks += rs._sections(rs.escape_mrkdwn(notice.note))
        changes, more = corrections.shown(list(notice.changes), limit=MAX_SLACK_DIFF_LINES)
        if changes:
            lines = "\n".join(rs.escape_mrkdwn(f"{c.sign} {c.part}: {c.text}") for c in changes)
            blocks += rs._sections("What changed\n" + lines + (f"\n… and {more} more" if more else ""))
        return rs.SlackMessage(text=rs.truncate(rs.escape_mrkdwn(f"{head}: {one_line(notice.note)}"),
                                                rs.MAX_FALLBACK), blocks=tuple(blocks[:rs.MAX_BLOCKS]))


def _items(recipient: Recipient, carried: list[SitrepView]):
    return digest.digest_items(recipient.analysts, carried)
