"""Slack: channel IDs through the Web API with a bot token (slack-sdk's
WebClient), incoming-webhook URLs through WebhookClient.

slack-sdk retries only connection errors by default; rate limits (429, with
Retry-After) and server errors (5xx) get one retry handler each here. What
is still failing after those becomes a TransientError carrying Retry-After.
A digest may be several messages: the receipt lists the ``ts`` of each one
posted, and a retry starts after the last one that went out, so no message
is posted twice.
"""

from __future__ import annotations

import json
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

from dispatch.errors import CredentialError, PermanentError, TransientError
from dispatch.render_slack import SlackContent, SlackMessage

# The channel (or a webhook URL, which is its own credential) is the problem: the subscriber is disabled.
RECIPIENT_ERRORS = {"channel_not_found", "is_archived", "not_in_channel", "channel_is_archived",
                    "no_service", "invalid_token", "action_prohibited", "no_active_hooks"}
# The bot token is the problem: it is the installation's, not any channel's.
CREDENTIAL_ERRORS = {"invalid_auth", "token_revoked", "account_inactive", "not_authed", "token_expired"}


# A short Retry-After is waited out in place; a longer one goes back to the
# ledger, so a sender thread is never parked for minutes.
MAX_INLINE_WAIT = 5.0


class ShortRateLimitRetryHandler(RateLimitErrorRetryHandler):
    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = _retry_after(response.headers)
        return wait is None or wait <= MAX_INLINE_WAIT


def _retry_handlers():
    return [ConnectionErrorRetryHandler(max_retry_count=2), ShortRateLimitRetryHandler(max_retry_count=1),
            ServerErrorRetryHandler(max_retry_count=2)]


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
    def __init__(self, *, token: str | None, base_url: str, min_interval: float = 1.0, timeout: int = 30):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"slack_base_url {base_url!r} is not an http(s) URL")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self._client = WebClient(token=token, base_url=self.base_url, timeout=timeout,
                                 retry_handlers=_retry_handlers()) if token else None
        self._pacer = Pacer(min_interval)
        self._webhooks: dict[str, WebhookClient] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        pass  # slack-sdk opens a connection per request

    def send(self, address: str, content: SlackContent, *, delivery_id: int, progress: str | None = None) -> str:
        posted: list[str] = list(json.loads(progress)["ts"]) if progress else []
        for message in content.messages[len(posted):]:
            self._pacer.wait(address)
            try:
                posted.append(self._post(address, message))
            except (TransientError, PermanentError) as exc:
                exc.progress = json.dumps({"channel": address, "ts": posted}) if posted else None
                raise
        return json.dumps({"channel": address, "ts": posted})

    def _post(self, address: str, message: SlackMessage) -> str:
        if address.startswith(("http://", "https://")):
            return self._post_webhook(address, message)
        if self._client is None:
            raise TransientError("no Slack bot token configured (DISPATCH_SLACK_BOT_TOKEN)")
        try:
            response = self._client.chat_postMessage(channel=address, text=message.text,
                                                     blocks=list(message.blocks), unfurl_links=False)
        except SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            status = exc.response.status_code if exc.response is not None else 0
            if error in CREDENTIAL_ERRORS:
                raise CredentialError(f"Slack refused the bot token: {error}") from exc
            raise _classify(status, error, _retry_after(exc.response.headers if exc.response else None),
                            where=address) from exc
        except (SlackClientError, OSError) as exc:
            raise TransientError(f"cannot reach Slack at {self.base_url}: {exc}") from exc
        return str(response.get("ts", ""))

    def _webhook(self, url: str) -> WebhookClient:
        with self._lock:
            if url not in self._webhooks:
                self._webhooks[url] = WebhookClient(url, timeout=self.timeout, retry_handlers=_retry_handlers())
            return self._webhooks[url]

    def _post_webhook(self, url: str, message: SlackMessage) -> str:
        try:
            # WebhookClient raises nothing on 4xx/429: the status and body tell.
            response = self._webhook(url).send(text=message.text, blocks=list(message.blocks),
                                               unfurl_links=False)
        except (SlackClientError, OSError) as exc:
            raise TransientError(f"cannot reach the webhook: {exc}") from exc
        if response.status_code == 200:
            return f"webhook:{response.body or 'ok'}"
        raise _classify(response.status_code, (response.body or "").strip(), _retry_after(response.headers),
                        where="webhook")


def _classify(status: int, error: str, retry_after: float | None, *, where: str):
    label = error or f"HTTP {status}"
    if status == 429 or error == "ratelimited":
        return TransientError(f"Slack rate limit at {where}: {label}", retry_after=retry_after)
    if status >= 500 or error in {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}:
        return TransientError(f"Slack server error at {where}: {label}", retry_after=retry_after)
    return PermanentError(f"Slack refused the message to {where}: {label}",
                          blames_recipient=error in RECIPIENT_ERRORS)
