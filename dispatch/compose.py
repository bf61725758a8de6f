"""From stored rows to rendered content: the one place that joins the
database, the pure digest decisions and the renderers.

Used by `dispatch preview` now, and by the sender, which renders each
delivery at send time from the current approved content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from dispatch import bootstrap, digest, links, views
from dispatch.config import Settings
from dispatch.digest import Digest, Recipient
from dispatch.models import SubscriberStatus
from dispatch.render import EmailContent, EmailRenderer, Personal, build_environment
from dispatch.render_slack import SlackContent, SlackRenderer


class Composer:
    """Renderers built once (templates compile once) plus what links need."""

    def __init__(self, settings: Settings, engine: Engine):
        environment = build_environment(settings.templates_dir)
        self.email_renderer = EmailRenderer(environment=environment)
        self.slack_renderer = SlackRenderer(environment=environment)
        self.public_url = str(settings.public_url)
        self.secret = bootstrap.secret_key(engine, settings)

    def personal(self, recipient: Recipient) -> Personal:
        urls = links.subscriber_links(self.public_url, self.secret,
                                      subscriber_id=recipient.id, address=recipient.address)
        return Personal.for_recipient(recipient, preferences_url=urls.preferences_url,
                                      unsubscribe_url=urls.unsubscribe_url)

    def email(self, digest_: Digest) -> EmailContent:
        return self.email_renderer.render(digest_, self.personal(digest_.recipient))

    def slack(self, digest_: Digest) -> SlackContent:
        return self.slack_renderer.render(digest_)


@dataclass(frozen=True)
class Preview:
    recipient: Recipient
    window_start: datetime
    window_end: datetime
    digest: Digest | None
    reason: str  # why nothing would be sent, when digest is None


def preview(session: Session, subscriber_id: int, *, now: datetime, status: SubscriberStatus) -> Preview:
    """What the subscriber's next window (as of ``now``) would carry, were it
    delivered with what is approved by ``now``. Writes nothing."""
    recipient = views.load_recipient(session, subscriber_id)
    start, end = digest.upcoming_window(recipient, now=now)
    approved = views.approved_sitreps(session, approved_after=start, approved_until=min(end, now))
    matching = [s for s in approved if digest.matches(recipient, s)]
    key = digest.window_key(recipient, end) if recipient.cadence != "immediate" else "preview"
    built = digest.build_digest(recipient, key, matching) if matching else None
    if status != SubscriberStatus.active:
        reason = f"the subscriber is {status.value}, so nothing is sent to them"
        built = None
    elif not approved:
        reason = "no SITREP has been approved in this window yet"
    elif not matching:
        wants = []
        if recipient.region_names:
            wants.append("regions " + ", ".join(recipient.region_names))
        if recipient.analyst_names:
            wants.append("analysts " + ", ".join(recipient.analyst_names))
        reason = (f"{len(approved)} SITREP(s) approved in this window, but none matches "
                  f"the subscriber's {' and '.join(wants)}")
    else:
        reason = ""
    return Preview(recipient=recipient, window_start=start, window_end=end, digest=built, reason=reason)
