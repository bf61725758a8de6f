"""Short messages to one subscriber that are not digests: the double opt-in
confirmation, and the reminder sent when an active address subscribes again.

They go straight out through the SMTP adapter (the subscriber is waiting
for them); a failure is reported to the caller, who keeps the pending
subscriber so that asking again sends it again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from jinja2 import Environment

from dispatch import links
from dispatch.adapters.smtp import SmtpAdapter
from dispatch.render import EmailContent


@dataclass(frozen=True)
class Notice:
    address: str
    content: EmailContent


def compose(environment: Environment, *, kind: str, brand: str, public_url: str, secret: str,
            subscriber_id: int, address: str) -> Notice:
    """``kind`` is "confirm" or "remind"."""
    urls = links.subscriber_links(public_url, secret, subscriber_id=subscriber_id, address=address)
    confirm_url = links.link_url(public_url, secret, subscriber_id=subscriber_id, address=address, purpose="confirm")
    text = environment.get_template("email/notice.txt.j2").render(
        kind=kind, brand=brand, address=address, confirm_url=confirm_url,
        preferences_url=urls.preferences_url, unsubscribe_url=urls.unsubscribe_url,
        valid_days=links.MAX_AGE["confirm"].days)
    subject = f"Confirm your subscription to {brand}" if kind == "confirm" else f"You are subscribed to {brand}"
    return Notice(address, EmailContent(subject=subject, text=text, html=None,
                                        preferences_url=urls.preferences_url, unsubscribe_url=urls.unsubscribe_url))


def send(adapter: SmtpAdapter, notice: Notice) -> str:
    """Send now; raises TransientError or PermanentError as the adapter does."""
    message_id = f"<notice-{secrets.token_hex(8)}@{adapter.domain}>"
    return adapter.send(notice.address, notice.content, message_id=message_id)
