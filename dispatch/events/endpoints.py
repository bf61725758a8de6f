"""Event webhooks: add, list, remove; and which URLs dispatch will POST to.

An event webhook URL is typed by an admin and then fetched by the server,
so it must be https, or plain http to a loopback host only (a receiver on
the same machine, tests); no user name or password in it, at most 500
characters. It is checked when stored and again before each POST.

Its host must not be (or resolve to) a private, loopback, link-local or
metadata address unless the operator lists that network in
DISPATCH_OUTBOUND_PRIVATE_NETWORKS (``dispatch.outbound``): checked when
stored, and before each POST on the very address connected to.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlmodel import Session, col, select

from dispatch import outbound, slack_webhooks
from dispatch.config import is_loopback
from dispatch.errors import FieldError, NotFoundError
from dispatch.events import catalogue, signing
from dispatch.models import EventWebhook

MAX_URL = 500


def url_problem(url: str) -> str | None:
    """What makes ``url`` no endpoint for events: the shape checks are the
    Slack webhooks' own (one place for what a URL we post to may look like)."""
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    problem = slack_webhooks.shape_problem(url)
    if problem is None and urlsplit(url).scheme.lower() == "http" and not is_loopback(urlsplit(url).hostname):
        problem = "must be https (plain http only to a loopback address)"
    return problem


def shown(url: str) -> str:
    """The URL as a log line may carry it: its scheme, host and port only. A
    receiver's path is often its credential (``/hooks/catch/<id>/<key>``),
    too short or too plain for the log's redaction to recognise."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def add(session: Session, url: str, *, events, private_networks=()) -> EventWebhook:
    """A new webhook with a secret of its own (shown to the caller once).
    ``private_networks``: settings.outbound_private_networks."""
    url = url.strip()
    problem = url_problem(url)
    if problem:
        raise FieldError("url", f"{url[:100]!r} {problem}")
    problem = outbound.url_address_problem(url, allowed=outbound.networks(private_networks))
    if problem:
        raise FieldError("url", f"{url[:100]!r}: {problem}")
    hook = EventWebhook(url=url, secret=signing.new_secret(), events=catalogue.check_types(events))
    session.add(hook)
    session.flush()
    return hook


def all_webhooks(session: Session) -> list[EventWebhook]:
    return list(session.exec(select(EventWebhook).order_by(col(EventWebhook.id))).all())


def remove(session: Session, webhook_id: int) -> EventWebhook:
    """Its pending event deliveries go with it (ON DELETE CASCADE)."""
    hook = session.get(EventWebhook, webhook_id)
    if hook is None:
        raise NotFoundError(f"no event webhook {webhook_id}")
    session.delete(hook)
    return hook


def as_dict(hook: EventWebhook, *, with_secret: bool = False) -> dict:
    return {"id": hook.id, "url": hook.url, "events": list(hook.events), "created_at": hook.created_at.isoformat(),
            "secret": hook.secret if with_secret else signing.masked(hook.secret)}
