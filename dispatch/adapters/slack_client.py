"""The slack-sdk side of the Slack adapter (dispatch.adapters.slack): its
WebClient with our retry handlers, and the errors it raises.

Imported when the first Web API call is made, not when the adapter is: slack-sdk
is some 50 modules (0.12 × 10⁹ instructions, a twentieth of `dispatch run`'s
start-up), and a run that posts nothing to Slack, or only to incoming webhooks
(which go through dispatch.outbound), never needs it.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError  # noqa: F401 (caught by the adapter)
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from dispatch import metrics
from dispatch.adapters.slack import MAX_INLINE_WAIT, _retry_after


class ShortRateLimitRetryHandler(RateLimitErrorRetryHandler):
    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if response is not None and response.status_code == 429:
            metrics.SLACK_RATE_LIMITED.inc()
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = _retry_after(response.headers)
        return wait is None or wait <= MAX_INLINE_WAIT


def retry_handlers():
    return [ConnectionErrorRetryHandler(max_retry_count=2), ShortRateLimitRetryHandler(max_retry_count=1),
            ServerErrorRetryHandler(max_retry_count=2)]


def web_client(*, token: str, base_url: str, timeout: int) -> WebClient:
    return WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=retry_handlers())
