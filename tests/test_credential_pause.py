"""A Slack bot token that Slack refuses is the installation's problem, not
any channel's: bot-token sending pauses (channels stay active, deliveries
wait without using up their attempts), `dispatch status`, the dashboard and
one log warning say so, and sending resumes once the token works. Against
the local Slack API server answering invalid_auth, then ok."""

import json
import logging
from datetime import timedelta

from pydantic import SecretStr
from sqlmodel import select

from dispatch import db, subscribers
from dispatch.config import Settings
from dispatch.models import Delivery, DeliveryStatus, SubscriberKind, SubscriberStatus
from dispatch.scheduler import Runner
from dispatch.sink import SlackSink

from .deliverytools import LATER, LOCAL_WEBHOOK_HOSTS, LOOPBACK_NETWORKS, Clock, received, seed
from .servers import scripted_smtp

TOKEN = "xoxb-installed"
CHANNELS = ["C0DESK001", "C0DESK002", "C0DESK003"]


def by_address(engine):
    with db.session_scope(engine) as session:
        return {subscribers.get(session, d.subscriber_id).address: d for d in session.exec(select(Delivery)).all()}


def pause_warnings(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and "is paused" in r.getMessage()]


def test_a_refused_bot_token_pauses_slack_keeps_channels_and_resumes(engine, database_url, tmp_path, caplog,
                                                                     run, monkeypatch):
    caplog.set_level(logging.INFO)
    sink, handler = scripted_smtp(tmp_path / "mail")
    slack = SlackSink(tmp_path / "slack", token="xoxb-revoked").start()  # Slack no longer takes our token
    hook = slack.webhook_url("ops")
    seed(engine, [(SubscriberKind.slack, c) for c in CHANNELS] + [(SubscriberKind.slack, hook), "r@example.org"])
    clock = Clock(LATER)
    settings = Settings(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port,
                        mail_from="news@example.org", secret_key=SecretStr("k"), slack_base_url=slack.base_url,
                        slack_webhook_hosts=LOCAL_WEBHOOK_HOSTS, outbound_private_networks=LOOPBACK_NETWORKS,
                        slack_bot_token=SecretStr(TOKEN), slack_min_interval=0, sender_threads=1)
    runner = Runner(settings, engine, clock=clock)
    monkeypatch.setenv("DISPATCH_DATABASE_URL", database_url)
    try:
        first = runner.run_once()
        # The webhook and the email went out; the bot-token channels wait, asked about once.
        assert first.by_status == {"sent": 2, "pending": 3}
        assert slack.requests == 2  # one refused chat.postMessage, one webhook post
        rows = by_address(engine)
        with db.session_scope(engine) as session:
            assert {subscribers.get(session, c).status for c in CHANNELS} == {SubscriberStatus.active}
        assert {rows[c].status for c in CHANNELS} == {DeliveryStatus.pending}
        assert {rows[c].attempts for c in CHANNELS} == {0}  # a pause does not use up attempts
        assert all("invalid_auth" in rows[c].last_error for c in CHANNELS)
        assert len(pause_warnings(caplog)) == 1

        shown = run("status", "--json")
        assert shown.exit_code == 0, (shown.output, shown.exception)
        status = json.loads(shown.stdout)
        (paused,) = status["paused"]
        assert paused["scope"] == "slack-bot-token" and "invalid_auth" in paused["reason"]
        assert "Slack bot-token sending is paused" in run("status").stdout

        clock.now += timedelta(seconds=30)  # within the pause: nobody asks Slack
        assert runner.run_once().by_status == {}
        assert slack.requests == 2

        clock.now += timedelta(minutes=1)  # the pause is over, the token still refused: a longer pause
        assert runner.run_once().by_status == {"pending": 3}
        assert slack.requests == 3 and len(pause_warnings(caplog)) == 1  # still one warning

        slack.token = TOKEN  # the token works again
        clock.now += timedelta(minutes=3)
        assert runner.run_once().by_status == {"sent": 3}
    finally:
        runner.close()
        sink.stop()
        slack.stop()
    assert sorted(p["channel"] for p in slack.posts if p["via"] == "api") == CHANNELS  # each once
    assert len([p for p in slack.posts if p["via"] == "webhook"]) == 1 and list(received(handler).values()) == [1]
    assert json.loads(run("status", "--json").stdout)["paused"] == []
    assert any("works again" in r.getMessage() for r in caplog.records)
    with db.session_scope(engine) as session:
        assert {subscribers.get(session, c).status for c in CHANNELS} == {SubscriberStatus.active}


def test_the_dashboard_says_slack_is_paused(web):
    from datetime import datetime, timezone

    from dispatch import pauses

    since = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    with db.session_scope(web.engine) as session:
        pauses.save(session, pauses.Pause(pauses.SLACK_BOT_TOKEN, "Slack refused the bot token: invalid_auth",
                                          since=since, until=since + timedelta(minutes=1)))
    web.sign_in()
    page = web.client.get("/admin").text
    assert "Slack bot-token sending is paused" in page and "invalid_auth" in page
    assert "channels stay active" in page
