"""From stored rows to rendered content: the one place that joins the
database, the pure digest decisions and the renderers.

Used by `dispatch preview` now, and by the sender, which renders each
delivery at send time from the current approved content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dispatch import bootstrap, digest, links, planner, views
from dispatch.config import Settings
from dispatch.digest import Digest, Recipient
from dispatch.models import Delivery, DeliveryStatus, Sitrep, SubscriberStatus
from dispatch.render import EmailContent, EmailRenderer, Personal, build_environment
from dispatch.render_slack import SlackContent, SlackRenderer


class Composer:
    """Renderers built once (templates compile once) plus what links need."""

    def __init__(self, settings: Settings, engine: Engine):
        environment = build_environment(settings.templates_dir)
        self.public_url = str(settings.public_url)
        self.secret = bootstrap.secret_key(engine, settings)
        self.archive = links.ArchiveLinks(self.public_url, self.secret, mode=settings.archive.value)
        self.email_renderer = EmailRenderer(environment=environment, brand=settings.brand,
                                            postal_address=settings.postal_address,
                                            max_full_items=settings.max_full_items, archive=self.archive)
        self.slack_renderer = SlackRenderer(environment=environment, brand=settings.brand, archive=self.archive)
        self.bounce_address = settings.bounce_address

    def return_path(self, delivery_id: int) -> str | None:
        """The VERP envelope sender of one delivery (None: the From address)."""
        return links.return_path(self.bounce_address, self.secret, delivery_id=delivery_id)

    def view_url(self, recipient: Recipient, delivery_id: int | None) -> str:
        """The delivery's web version; without a delivery (a preview), the archive or the site."""
        if delivery_id is None:
            return self.archive.index() or self.public_url
        token = links.view_token(self.secret, delivery_id=delivery_id, subscriber_id=recipient.id,
                                 address=recipient.address)
        return f"{self.public_url.rstrip('/')}/view/{token}"

    def personal(self, recipient: Recipient, *, delivery_id: int | None = None) -> Personal:
        urls = links.subscriber_links(self.public_url, self.secret,
                                      subscriber_id=recipient.id, address=recipient.address)
        return Personal.for_recipient(recipient, preferences_url=urls.preferences_url,
                                      unsubscribe_url=urls.unsubscribe_url,
                                      view_url=self.view_url(recipient, delivery_id))

    def email(self, digest_: Digest, *, delivery_id: int | None = None) -> EmailContent:
        return self.email_renderer.render(digest_, self.personal(digest_.recipient, delivery_id=delivery_id))

    def slack(self, digest_: Digest) -> SlackContent:
        return self.slack_renderer.render(digest_)


@dataclass(frozen=True)
class Preview:
    recipient: Recipient
    window_start: datetime
    window_end: datetime
    digest: Digest | None  # the next one (the first of ``digests``)
    reason: str  # why nothing would be sent, when digest is None
    # Everything that would go out next: one digest for a daily or weekly
    # window; for an immediate reader one per SITREP, each on its own.
    digests: tuple[Digest, ...] = field(default=())


# A delivery in these states is still to be sent; any other was sent or settled.
_QUEUED = (DeliveryStatus.pending, DeliveryStatus.sending)


def preview(session: Session, subscriber_id: int, *, now: datetime, status: SubscriberStatus) -> Preview:
    """What the subscriber's next window (as of ``now``) would carry, were it
    delivered with what is approved by ``now``. Writes nothing."""
    recipient = views.load_recipient(session, subscriber_id)
    if recipient.cadence == "immediate":
        return _preview_immediate(session, recipient, now=now, status=status)
    start, end = digest.upcoming_window(recipient, now=now)
    approved = views.approved_sitreps(session, approved_after=start, approved_until=min(end, now))
    matching = [s for s in approved if digest.matches(recipient, s)]
    # As the planner plans it: what reached them in a FLASH is left out.
    flashed = planner.flashed_for(session, [recipient.id], {s.id: digest.flash_key(s) for s in matching if s.flash})
    in_flash = flashed.get(recipient.id, set())
    wanted = bool(matching)
    matching = [s for s in matching if s.id not in in_flash]
    built = digest.build_digest(recipient, digest.window_key(recipient, end), matching) if matching else None
    if status != SubscriberStatus.active:
        reason = f"the subscriber is {status.value}, so nothing is sent to them"
        built = None
    elif not approved:
        reason = "no SITREP has been approved in this window yet"
    elif not wanted:
        reason = f"{len(approved)} SITREP(s) approved in this window, but none matches {_wants(recipient)}"
    elif not matching:
        reason = "what matches them in this window reached them in a FLASH; their digest leaves it out"
    else:
        reason = ""
    return Preview(recipient=recipient, window_start=start, window_end=end, digest=built, reason=reason,
                   digests=(built,) if built else ())


def _wants(recipient: Recipient) -> str:
    wants = []
    if recipient.region_names:
        wants.append("regions " + ", ".join(recipient.region_names))
    if recipient.analyst_names:
        wants.append("analysts " + ", ".join(recipient.analyst_names))
    return f"the subscriber's {' and '.join(wants)}"


def _preview_immediate(session: Session, recipient: Recipient, *, now: datetime,
                       status: SubscriberStatus) -> Preview:
    """As the planner sends to an immediate reader: each SITREP approved
    after they subscribed and matching them, on its own (its window key is
    digest.immediate_key), unless that window is already settled for them.
    Next are the ones queued for them (a pending delivery) and the ones the
    planner has yet to fan out (Sitrep.immediate_planned_at unset); one
    fanned out before they became an immediate reader never goes to them."""
    approved = views.approved_sitreps(session, approved_after=recipient.created_at, approved_until=now)
    # A FLASH reaches them as a FLASH (its own window key), not as an immediate delivery.
    windows = (digest.immediate_windows(recipient, [s for s in approved if not s.flash])
               + digest.flash_windows(recipient, approved))
    keys = [w.key for w in windows]
    delivered = dict(session.exec(select(Delivery.window_key, Delivery.status).where(
        Delivery.subscriber_id == recipient.id, col(Delivery.window_key).in_(keys))).all()) if keys else {}
    unplanned = set(session.exec(select(Sitrep.id).where(
        col(Sitrep.id).in_([w.sitrep_ids[0] for w in windows]), col(Sitrep.immediate_planned_at).is_(None))).all()
    ) if windows else set()
    by_id = {s.id: s for s in approved}
    upcoming = [w for w in windows
                if delivered.get(w.key) in _QUEUED or (w.key not in delivered and w.sitrep_ids[0] in unplanned)]
    built = tuple(digest.build_digest(recipient, w.key, [by_id[w.sitrep_ids[0]]]) for w in upcoming)
    if status != SubscriberStatus.active:
        reason, built = f"the subscriber is {status.value}, so nothing is sent to them", ()
    elif not approved:
        reason = "no SITREP has been approved since they subscribed"
    elif not windows:
        reason = f"{len(approved)} SITREP(s) approved since they subscribed, but none matches {_wants(recipient)}"
    elif not built:
        reason = ("every matching SITREP approved so far has gone to them already; "
                  "the next one approved goes out on its own")
    else:
        reason = ""
    start = upcoming[0].start if built else now
    return Preview(recipient=recipient, window_start=start, window_end=now, digest=built[0] if built else None,
                   reason=reason, digests=built)
