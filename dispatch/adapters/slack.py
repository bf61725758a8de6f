"""Slack: channel IDs through the Web API with a bot token (slack-sdk's
WebClient, made in dispatch.adapters.slack_client when the first call is
made: slack-sdk is not imported for a run that posts nothing to a channel),
incoming-webhook URLs with a small POST of our own.

slack-sdk retries only connection errors by default; rate limits (429, with
Retry-After) and server errors (5xx) get one retry handler each (in
slack_client). What
is still failing after those becomes a TransientError carrying Retry-After.
A digest may be several messages: the receipt lists the ``ts`` of each one
posted, and a retry starts after the last one that went out, so no message
is posted twice.

Webhooks do not go through slack-sdk's WebhookClient: it posts with
urllib's default opener, which follows redirects (a POST turned into a GET
to wherever the answer points), reads any answer whole and bounds only each
socket read, not the whole post. Ours posts only to an allowed host
(``slack_webhooks``) at a checked address, within one total deadline
(``dispatch.outbound``), never follows a redirect (a 3xx is a permanent
error naming the status), reads at most a few KB of an answer, and keeps
only a short status from it ("HTTP 400 invalid_payload"): what a server
answers is never stored as it came.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Collection

from dispatch import metrics, outbound, slack_webhooks
from dispatch.desk import corrections
from dispatch.errors import CredentialError, PermanentError, TransientError
from dispatch.render_slack import SlackContent, SlackMessage

# The channel (or a webhook URL, which is its own credential) is the problem: the subscriber is disabled.
RECIPIENT_ERRORS = {"channel_not_found", "is_archived", "not_in_channel", "channel_is_archived",
                    "no_service", "invalid_token", "action_prohibited", "no_active_hooks"}
# The bot token is the problem: it is the installation's, not any channel's.
CREDENTIAL_ERRORS = {"invalid_auth", "token_revoked", "account_inactive", "not_authed", "token_expired"}


RECEIPT_ROOM = 500  # characters a delivery's receipt may take (the ledger's receipt column)

# A short Retry-After is waited out in place; a longer one goes back to the
# ledger, so a sender thread is never parked for minutes.
MAX_INLINE_WAIT = 5.0


def _retry_after(headers) -> float | None:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            value = value[0] if isinstance(value, list) else value
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


class Pacer:
    """About one message a second per channel, as Slack asks."""

    def __init__(self, interval: float):
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, channel: str) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._last.get(channel, 0.0) + self.interval)
            self._last[channel] = slot
        if slot > now:
            time.sleep(slot - now)


class SlackAdapter:
    def __init__(self, *, token: str | None, base_url: str, min_interval: float = 1.0, timeout: int = 30,
                 webhook_hosts: Collection[str] = (), private_networks: Collection[str] = ()):
        """``webhook_hosts``: hosts allowed for webhook URLs besides Slack's (settings.slack_webhook_hosts);
        ``private_networks``: internal networks a webhook may reach (settings.outbound_private_networks)."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"slack_base_url {base_url!r} is not an http(s) URL")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self._token = token
        self._client = None  # slack-sdk's WebClient, made for the first Web API call (slack_client)
        self._client_lock = threading.Lock()
        self._pacer = Pacer(min_interval)
        self.webhook_hosts = tuple(webhook_hosts)
        self._webhook = _WebhookPoster(timeout=timeout, allowed=outbound.networks(private_networks))

    def close(self) -> None:
        pass  # slack-sdk opens a connection per request

    def send(self, address: str, content: SlackContent, *, delivery_id: int, progress: str | None = None) -> str:
        posted: list[str] = list(json.loads(progress)["ts"]) if progress else []
        for message in content.messages[len(posted):]:
            self._pacer.wait(address)
            try:
                posted.append(self._post(address, message))
            except (TransientError, PermanentError) as exc:
                exc.progress = self._receipt(address, posted, content) if posted else None
                raise
        return self._receipt(address, posted, content)

    @staticmethod
    def _receipt(address: str, posted: list[str], content: SlackContent) -> str:
        receipt = {"channel": _receipt_channel(address), "ts": posted}
        if _receipt_channel(address) != "webhook":  # a webhook post cannot be updated: nothing to find later
            receipt = corrections.receipt_sitreps(receipt, [m.sitrep_ids for m in content.messages[:len(posted)]],
                                                  room=RECEIPT_ROOM)
        return json.dumps(receipt)

    def update(self, channel: str, ts: str, message: SlackMessage) -> str:
        """Replace a message the bot posted (``chat.update``): a correction
        or a retraction shown where the SITREP was read. Returns its ts."""
        self._pacer.wait(channel)
        return self._call("chat_update", channel, channel=channel, ts=ts, text=message.text,
                          blocks=list(message.blocks))

    def reply(self, channel: str, thread_ts: str, message: SlackMessage) -> str:
        """Post in the thread of ``thread_ts``; returns the reply's ts."""
        self._pacer.wait(channel)
        return self._call("chat_postMessage", channel, channel=channel, thread_ts=thread_ts, text=message.text,
                          blocks=list(message.blocks), unfurl_links=False, unfurl_media=False, mrkdwn=False)

    def post(self, address: str, message: SlackMessage) -> str:
        """One new message to a channel or webhook (a notice where no post can be updated)."""
        self._pacer.wait(address)
        return self._post(address, message)

    def _post(self, address: str, message: SlackMessage) -> str:
        if slack_webhooks.is_webhook(address):
            return self._post_webhook(address, message)
        return self._call("chat_postMessage", address, channel=address, text=message.text,
                          blocks=list(message.blocks), unfurl_links=False, unfurl_media=False, mrkdwn=False)

    def _call(self, method: str, address: str, **arguments) -> str:
        """A Web API call with the bot token, its errors mapped as for a post."""
        if not self._token:
            raise TransientError("no Slack bot token configured (DISPATCH_SLACK_BOT_TOKEN)")
        from dispatch.adapters import slack_client as api

        try:
            response = getattr(self._web_client(api), method)(**arguments)
        except api.SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            status = exc.response.status_code if exc.response is not None else 0
            if error in CREDENTIAL_ERRORS:
                raise CredentialError(f"Slack refused the bot token: {error}") from exc
            raise _classify(status, error, _retry_after(exc.response.headers if exc.response else None),
                            where=address) from exc
        except (api.SlackClientError, OSError) as exc:
            raise TransientError(f"cannot reach Slack at {self.base_url}: {exc}") from exc
        return str(response.get("ts", ""))

    def _web_client(self, api):
        with self._client_lock:  # sender threads share one client
            if self._client is None:
                self._client = api.web_client(token=self._token, base_url=self.base_url, timeout=self.timeout)
            return self._client

    def _post_webhook(self, url: str, message: SlackMessage) -> str:
        problem = slack_webhooks.webhook_problem(url, extra_hosts=self.webhook_hosts)
        if problem:  # stored before the rule, or the setting changed since: nothing is sent
            raise PermanentError(f"webhook not posted to: the URL {problem}")
        payload = {"text": message.text, "blocks": list(message.blocks), "unfurl_links": False,
                   "unfurl_media": False, "mrkdwn": False}
        status, code, retry_after = self._webhook.post(url, payload)
        if 200 <= status < 300:
            return "webhook:ok"  # what the body says is not kept
        if 300 <= status < 400:
            raise PermanentError(f"Slack webhook answered HTTP {status}, a redirect, which is never followed; "
                                 "check the webhook URL")
        raise _classify(status, code, retry_after, where=f"webhook (HTTP {status})")


def _receipt_channel(address: str) -> str:
    """A receipt names the channel it went to, but never a webhook URL (a credential)."""
    return "webhook" if slack_webhooks.is_webhook(address) else address


MAX_ANSWER_BYTES = 4096  # Slack's answers are a word ("ok", "invalid_payload"); nothing more is read
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,60}")


def short_status(body: bytes) -> str:
    """What is kept of an error answer: a Slack error code ("invalid_payload"),
    else a short excerpt of its printable ASCII text, else nothing."""
    text = body[:MAX_ANSWER_BYTES].decode("utf-8", "replace").strip()
    if _ERROR_CODE.fullmatch(text):
        return text
    if text.startswith("{"):  # a JSON answer such as {"ok": false, "error": "..."}
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, str) and _ERROR_CODE.fullmatch(error):
            return error
    excerpt = " ".join("".join(ch if ch.isascii() and ch.isprintable() else " " for ch in text[:200]).split())
    return excerpt[:60].rstrip() + "…" if len(excerpt) > 60 or (excerpt and len(body) > 200) else excerpt


class _WebhookPoster:
    """POST one JSON payload; answer (status, short status or "", Retry-After).
    Retried in place as slack-sdk's handlers would: 429 with a short
    Retry-After once, 5xx and connection errors twice."""

    def __init__(self, *, timeout: float, allowed: tuple[outbound.Network, ...] = ()):
        self.timeout = timeout  # for each try in all, from the lookup to the last byte of the answer
        self.allowed = allowed

    def post(self, url: str, payload: dict) -> tuple[int, str, float | None]:
        data = json.dumps(payload).encode("utf-8")
        tries = {"rate": 1, "server": 2, "connection": 2}
        while True:
            try:
                answer = outbound.post(url, data, {"Content-Type": "application/json;charset=utf-8"},
                                       timeout=self.timeout, allowed=self.allowed, max_answer=MAX_ANSWER_BYTES)
            except outbound.AddressRefused as exc:  # names the host, never the URL's secret path
                raise PermanentError(f"webhook not posted to: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:  # the text of these carries no URL
                # The errors slack-sdk's ConnectionErrorRetryHandler retries; a
                # timeout is not retried here (the post may have arrived).
                if tries["connection"] and isinstance(exc, (ConnectionRefusedError, ConnectionResetError,
                                                            socket.gaierror, http.client.RemoteDisconnected)):
                    tries["connection"] -= 1
                    time.sleep(0.5)
                    continue
                reason = "no answer in time" if isinstance(exc, TimeoutError) else (getattr(exc, "strerror", None) or type(exc).__name__)
                raise TransientError(f"cannot reach the webhook: {reason}") from exc
            status = answer.status
            if 200 <= status < 300:
                return status, "", None  # nothing of a success answer is kept
            retry_after, code = _retry_after(answer.headers), short_status(answer.body)
            if status == 429:
                metrics.SLACK_RATE_LIMITED.inc()
            if status == 429 and tries["rate"] and (retry_after or 0) <= MAX_INLINE_WAIT:
                tries["rate"] -= 1
                time.sleep(retry_after or 1.0)
                continue
            if status >= 500 and tries["server"]:
                tries["server"] -= 1
                time.sleep(0.5)
                continue
            return status, code, retry_after


def _classify(status: int, error: str, retry_after: float | None, *, where: str):
    label = error or f"HTTP {status}"
    if status == 429 or error == "ratelimited":
        return TransientError(f"Slack rate limit at {where}: {label}", retry_after=retry_after)
    if status >= 500 or error in {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}:
        return TransientError(f"Slack server error at {where}: {label}", retry_after=retry_after)
    return PermanentError(f"Slack refused the message to {where}: {label}",
                          blames_recipient=error in RECIPIENT_ERRORS)
