"""Which incoming-webhook URLs dispatch will post to.

A webhook URL is typed by an admin (or sent to the API) and then fetched by
the server: without a rule it could point anywhere — an internal service, a
cloud metadata address, a server that answers with whatever it wants stored.
So a webhook URL must be https on one of Slack's own hosts, or on a host the
operator lists in DISPATCH_SLACK_WEBHOOK_HOSTS; plain http only for a listed
host on loopback (the local Slack sink in development and tests). The rule
is checked when an address is stored (subscribers.check_slack_address) and
again before each post (the Slack adapter), so a stored URL from before a
settings change is refused too.

Its host's addresses are checked as an event webhook's are
(``dispatch.outbound``): when it is stored (``address_problem``: a literal
address, or what the name resolves to then; a name that does not resolve
yet is let through) and again, authoritatively, before each post. A
private, loopback, link-local (cloud metadata) or otherwise non-public
address needs its network in DISPATCH_OUTBOUND_PRIVATE_NETWORKS.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from dispatch.config import control_characters, is_loopback

SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
SETTING = "DISPATCH_SLACK_WEBHOOK_HOSTS"


def is_webhook(address: str) -> bool:
    """A Slack address is a webhook URL (else a channel ID)."""
    return address.lower().startswith(("http://", "https://"))


def shape_problem(url: str) -> str | None:
    """What makes ``url`` no http(s) URL with a host at all, or None."""
    if control_characters(url):
        return "must not contain line breaks or other control characters"
    if " " in url:
        return "must not contain spaces"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    return None


def webhook_problem(url: str, *, extra_hosts: Collection[str] = ()) -> str | None:
    """Why dispatch will not post to ``url``, or None. ``extra_hosts`` are
    the hosts the operator allows besides Slack's (settings.slack_webhook_hosts)."""
    problem = shape_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    listed = {h.lower().strip("[]").rstrip(".") for h in extra_hosts}
    if host not in SLACK_HOSTS and host not in listed:
        return (f"{host} is not a Slack webhook host ({', '.join(SLACK_HOSTS)}); "
                f"to post to another host, list it in {SETTING}")
    if parts.scheme.lower() == "http" and not (host in listed and is_loopback(host)):
        return f"must be https (plain http only for a loopback host listed in {SETTING})"
    return None


def address_problem(url: str, *, private_networks: Collection[str] = (),
                    checked: dict[str, str | None] | None = None) -> str | None:
    """For a webhook URL being stored, once ``webhook_problem`` passed it:
    why its host's addresses are refused (the event webhooks' message), or
    None. ``private_networks``: settings.outbound_private_networks.
    ``checked``: what each host came to, kept by the caller (a CSV import):
    its rows share a few hosts, and each is looked up once."""
    from dispatch import outbound  # http.client and ssl: only when a webhook URL is stored

    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if checked is not None and host in checked:
        return checked[host]
    problem = outbound.url_address_problem(url, allowed=outbound.networks(private_networks))
    if checked is not None:
        checked[host] = problem  # hosts are Slack's or listed ones (webhook_problem): a short list
    return problem
