"""The Slack adapter: the real slack-sdk client against the local Slack API
server, including its error and 429 answers."""

import json
import time

import pytest

from dispatch.adapters.slack import SlackAdapter
from dispatch.errors import CredentialError, PermanentError, TransientError
from dispatch.render_slack import SlackContent, SlackMessage
from dispatch.sink import SlackSink

TOKEN = "xoxb-test"


def content(parts=1):
    return SlackContent(messages=tuple(
        SlackMessage(text=f"part {n}", blocks=({"type": "section", "text": {"type": "mrkdwn", "text": f"body {n}"}},))
        for n in range(1, parts + 1)))


@pytest.fixture
def sink(tmp_path):
    server = SlackSink(tmp_path / "slack", token=TOKEN, missing_channels=("C0MISSING",),
                       archived_channels=("C0ARCHIVED",)).start()
    yield server
    server.stop()


def adapter(sink, **kw):
    kw.setdefault("webhook_hosts", ("127.0.0.1",))  # the sink's webhooks are on loopback
    kw.setdefault("private_networks", ("127.0.0.1/32",))  # which dispatch posts to only when told
    return SlackAdapter(token=kw.pop("token", TOKEN), base_url=sink.base_url, min_interval=kw.pop("interval", 0), **kw)


def test_posts_every_part_in_order_with_text_and_blocks(sink):
    receipt = json.loads(adapter(sink).send("C0123ABCD", content(3), delivery_id=1))
    assert receipt["channel"] == "C0123ABCD" and len(receipt["ts"]) == 3
    assert [p["text"] for p in sink.posts] == ["part 1", "part 2", "part 3"]
    assert all(p["blocks"] and p["channel"] == "C0123ABCD" for p in sink.posts)
    stored = list((sink.folder / "C0123ABCD").glob("*.json"))
    assert len(stored) == 3


def test_429_with_retry_after_is_retried_by_the_client(sink):
    sink.fail_next(429, retry_after=1)
    started = time.monotonic()
    adapter(sink).send("C0123ABCD", content(), delivery_id=1)
    assert time.monotonic() - started >= 1  # Retry-After honoured
    assert sink.requests == 2 and len(sink.posts) == 1


def test_repeated_429_becomes_transient_with_retry_after(sink):
    sink.fail_next(429, retry_after=1, times=2)
    with pytest.raises(TransientError) as caught:
        adapter(sink).send("C0123ABCD", content(), delivery_id=1)
    assert caught.value.retry_after == 1.0 and "rate limit" in str(caught.value)
    assert sink.posts == []


def test_long_retry_after_is_not_waited_out_in_place(sink):
    sink.fail_next(429, retry_after=600)
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        adapter(sink).send("C0123ABCD", content(), delivery_id=1)
    assert caught.value.retry_after == 600 and time.monotonic() - started < 5
    assert sink.requests == 1


def test_server_errors_are_retried_then_transient(sink):
    sink.fail_next(500, error="internal_error", times=3)
    with pytest.raises(TransientError, match="server error"):
        adapter(sink).send("C0123ABCD", content(), delivery_id=1)
    assert sink.requests == 3  # the first try and two retries by slack-sdk


@pytest.mark.parametrize("channel, error", [("C0MISSING", "channel_not_found"), ("C0ARCHIVED", "is_archived")])
def test_channel_errors_are_permanent_and_blame_the_channel(sink, channel, error):
    with pytest.raises(PermanentError, match=error) as caught:
        adapter(sink).send(channel, content(), delivery_id=1)
    assert caught.value.blames_recipient


def test_a_bad_token_is_the_installations_credential_error_not_the_channels(sink):
    with pytest.raises(CredentialError, match="invalid_auth") as caught:
        adapter(sink, token="xoxb-wrong").send("C0123ABCD", content(), delivery_id=1)
    assert isinstance(caught.value, TransientError)  # the delivery waits; nobody is blamed
    for error in ("token_revoked", "account_inactive", "not_authed"):
        sink.fail_next(200, error=error)
        with pytest.raises(CredentialError, match=error):
            adapter(sink).send("C0123ABCD", content(), delivery_id=1)


def test_no_token_configured(sink):
    with pytest.raises(TransientError, match="no Slack bot token"):
        SlackAdapter(token=None, base_url=sink.base_url).send("C0123ABCD", content(), delivery_id=1)


def test_a_failed_part_resumes_after_the_parts_already_posted(sink):
    a = adapter(sink)
    # Let part 1 through, then fail part 2 twice (the client's own retry included).
    original = sink.answer
    calls = {"n": 0}

    def flaky(path, headers, body):
        calls["n"] += 1
        if calls["n"] in (2, 3):
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "0"}
        return original(path, headers, body)

    sink.answer = flaky
    with pytest.raises(TransientError) as caught:
        a.send("C0123ABCD", content(3), delivery_id=1)
    progress = caught.value.progress
    assert len(json.loads(progress)["ts"]) == 1
    receipt = json.loads(a.send("C0123ABCD", content(3), delivery_id=1, progress=progress))
    assert len(receipt["ts"]) == 3
    assert [p["text"] for p in sink.posts] == ["part 1", "part 2", "part 3"]  # nothing posted twice


def test_webhooks(sink):
    url = sink.webhook_url("desk")
    assert adapter(sink).send(url, content(2), delivery_id=1)
    assert [p["via"] for p in sink.posts] == ["webhook", "webhook"]
    sink.fail_next(404, error="no_service")
    with pytest.raises(PermanentError) as caught:
        adapter(sink).send(url, content(), delivery_id=2)
    assert caught.value.blames_recipient


def test_pacing_spaces_posts_to_one_channel(sink):
    a = adapter(sink, interval=0.3)
    started = time.monotonic()
    a.send("C0123ABCD", content(3), delivery_id=1)
    assert time.monotonic() - started >= 0.6


def test_bad_base_url():
    with pytest.raises(ValueError, match="not an http"):
        SlackAdapter(token=TOKEN, base_url="slack.com/api")


# --- webhooks: allowed hosts only, no redirects, nothing of an answer kept ----------

def test_webhooks_go_only_to_slack_or_to_listed_hosts(sink):
    url = sink.webhook_url("desk")
    with pytest.raises(PermanentError, match="127.0.0.1 is not a Slack webhook host.*SLACK_WEBHOOK_HOSTS"):
        adapter(sink, webhook_hosts=()).send(url, content(), delivery_id=1)
    with pytest.raises(PermanentError, match="must be https"):
        adapter(sink, webhook_hosts=("localhost.example",)).send(
            url.replace("127.0.0.1", "localhost.example"), content(), delivery_id=1)
    assert sink.requests == 0  # refused before any request


def test_a_receipt_does_not_carry_the_webhook_url(sink):
    receipt = json.loads(adapter(sink).send(sink.webhook_url("desk"), content(2), delivery_id=1))
    assert receipt == {"channel": "webhook", "ts": ["webhook:ok", "webhook:ok"]}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_permanent_error_and_is_not_followed(sink, status):
    sink.fail_next(status, body="", headers={"Location": sink.webhook_url("elsewhere")})
    with pytest.raises(PermanentError, match=f"HTTP {status}, a redirect, which is never followed") as caught:
        adapter(sink).send(sink.webhook_url("desk"), content(), delivery_id=1)
    assert not caught.value.blames_recipient
    assert sink.gets == [] and sink.posts == [] and sink.requests == 1


@pytest.mark.parametrize("body, kept", [
    ("invalid_payload", "invalid_payload"),
    ('{"ok": false, "error": "invalid_blocks"}', "invalid_blocks"),
    ("<html><body>" + "Lorem ipsum \x00\u202e dolor " * 100_000 + "</body></html>",
     "<html><body>Lorem ipsum dolor Lorem ipsum dolor Lorem ipsum…"),
    ("", ""),
])
def test_only_a_short_status_is_kept_of_an_error_answer(sink, body, kept):
    sink.fail_next(400, body=body)
    with pytest.raises(PermanentError) as caught:
        adapter(sink).send(sink.webhook_url("desk"), content(), delivery_id=1)
    message = str(caught.value)
    assert message == f"Slack refused the message to webhook (HTTP 400): {kept or 'HTTP 400'}"
    assert len(message) <= 150 and message.isprintable()


def test_a_slack_error_code_in_a_webhook_answer_still_decides(sink):
    sink.fail_next(404, body="no_service")
    with pytest.raises(PermanentError) as caught:
        adapter(sink).send(sink.webhook_url("desk"), content(), delivery_id=1)
    assert caught.value.blames_recipient and "no_service" in str(caught.value)
    sink.fail_next(500, body="x" * 50_000, times=3)
    with pytest.raises(TransientError, match=r"server error at webhook \(HTTP 500\)") as caught:
        adapter(sink).send(sink.webhook_url("desk"), content(), delivery_id=2)
    assert len(str(caught.value)) <= 150
    sink.fail_next(429, body="ratelimited", retry_after=120)
    with pytest.raises(TransientError) as caught:
        adapter(sink).send(sink.webhook_url("desk"), content(), delivery_id=3)
    assert caught.value.retry_after == 120.0
