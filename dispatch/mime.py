"""EmailContent → the bytes of an RFC 5322 message, with the headers that
mail providers expect of a newsletter.

Every header is built from checked values: the subject passes through
``render.one_line`` and addresses through ``email.headerregistry``, so a CR or
LF in a name or subject can never start a new header.
"""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import quote

from dispatch.render import EmailContent, one_line

POLICY = email.policy.SMTP.clone(max_line_length=998)


def message_id(delivery_id: int, domain: str) -> str:
    """Deterministic per delivery, so a resend after a crash can be told."""
    return f"<delivery-{delivery_id}@{domain}>"


def build_message(
    content: EmailContent,
    *,
    sender: str,
    to: str,
    msg_id: str | None = None,
    list_id: str,
    unsubscribe_mailto: str,
    date: datetime,
    reply_to: str | None = None,
) -> bytes:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = to
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = one_line(content.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = msg_id or make_msgid(domain=list_id.strip("<>").split(".", 1)[-1])
    msg["List-Id"] = list_id
    mailto = f"mailto:{unsubscribe_mailto}?subject={quote('unsubscribe ' + content.unsubscribe_url)}"
    msg["List-Unsubscribe"] = f"<{content.unsubscribe_url}>, <{mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(content.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if content.html is not None:
        msg.add_alternative(content.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()
