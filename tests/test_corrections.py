"""Corrections and retractions after release (issue 17, point 5), end to
end on SQLite and PostgreSQL: Slack posts updated in place through the real
slack-sdk against the local Slack API (chat.update on the original ts, a
threaded reply), webhook channels posted anew, a correction email over SMTP
to each earlier reader only, nothing to the unsubscribed, the corrected
content in the digests still to come, and nothing sent twice."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr
from sqlmodel import select

from dispatch import db, revisions, sitreps, subscribers
from dispatch.config import Settings
from dispatch.desk import roles
from dispatch.errors import WorkflowError
from dispatch.events import signing
from dispatch.models import AuditEntry, Delivery, Event, EventWebhook, SubscriberKind, SubscriberStatus
from dispatch.scheduler import Runner
from dispatch.sink import SlackSink
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .servers import scripted_smtp

TOKEN = "xoxb-corrections"
APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
STANDARD = (FIXTURES / "standard.txt").read_text("utf-8")
CORRECTED = STANDARD.replace("about a dozen grain carriers", "fourteen grain carriers").replace(
    "would resume on Wednesday", "would resume on Thursday")
NOTE = "The number of carriers was fourteen, and talks resume on Thursday."
TITLE = "Port Strike Halts Grain Shipments from Odesa"


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def smtp_server(tmp_path):
    sink, handler = scripted_smtp(tmp_path / "mail")
    yield sink, handler
    sink.stop()


@pytest.fixture
def smtp(smtp_server):
    return smtp_server[1]


@pytest.fixture
def slack(tmp_path):
    sink = SlackSink(tmp_path / "slack", token=TOKEN).start()
    yield sink
    sink.stop()


@pytest.fixture
def clock():
    return Clock(APPROVED + timedelta(minutes=5))


@pytest.fixture
def runner(database_url, engine, smtp_server, slack, clock):
    settings = Settings(database_url=database_url, smtp_host=smtp_server[0].host, smtp_port=smtp_server[0].port,
                        mail_from="Briefings <news@example.org>", slack_base_url=slack.base_url,
                        slack_bot_token=SecretStr(TOKEN), slack_min_interval=0, secret_key=SecretStr("k"),
                        public_url="https://news.example.org/", slack_webhook_hosts=("127.0.0.1",),
                        outbound_private_networks=("127.0.0.1/32",))  # the local Slack sink's webhooks
    r = Runner(settings, engine, clock=clock)
    yield r
    r.close()


@pytest.fixture
def desk(engine, slack):
    """The standard SITREP approved; immediate readers by email (HTML and
    text), a Slack channel (bot token) and a webhook; a daily reader whose
    window is still to come; and a reader who will unsubscribe."""
    with db.session_scope(engine) as session:
        sitrep = sitreps.import_parsed(session, parse(STANDARD), actor="ed").sitrep
        for kind, address, prefs in [
            (SubscriberKind.email, "html@example.org", Preferences(cadence="immediate")),
            (SubscriberKind.email, "text@example.org", Preferences(cadence="immediate", format="text")),
            (SubscriberKind.email, "leaving@example.org", Preferences(cadence="immediate")),
            (SubscriberKind.slack, "C0DESK01", Preferences(cadence="immediate")),
            (SubscriberKind.slack, slack.webhook_url("desk"), Preferences(cadence="immediate")),
            (SubscriberKind.email, "daily@example.org", Preferences(cadence="daily", send_at="07:00",
                                                                   timezone="UTC")),
        ]:
            s = subscribers.add_subscriber(session, address, kind=kind, prefs=prefs, webhook_hosts=("127.0.0.1",),
                                           private_networks=("127.0.0.1/32",))
            s.created_at = APPROVED - timedelta(days=3)
        # Told of corrections; its posts go nowhere (a closed loopback port), only the events matter here.
        session.add(EventWebhook(url="http://127.0.0.1:9/in", secret=signing.new_secret(),
                                 events=["sitrep.corrected", "sitrep.retracted"]))
        sitreps.approve_sitrep(session, sitrep.id, by="chief", at=APPROVED)
        return sitrep.id


def mails(handler) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(handler.folder.glob("*.eml"))]


def unsubscribe(engine, address):
    with db.session_scope(engine) as session:
        subscribers.get(session, address).status = SubscriberStatus.unsubscribed


def delivered_once(runner, clock, slack, smtp, engine):
    runner.run_once()
    assert sorted(m["To"] for m in mails(smtp)) == ["html@example.org", "leaving@example.org", "text@example.org"]
    (original,) = [p for p in slack.posts if p["channel"] == "C0DESK01"]
    receipt = json.loads(next(d.receipt for d in _deliveries(engine) if d.window_key.startswith("sitrep:")
                              and "C0DESK01" in (d.receipt or "")))
    assert receipt["ts"] == [original["ts"]] and receipt["sitreps"] == [[1]]  # which message carried what
    return original


def _deliveries(engine) -> list[Delivery]:
    with db.session_scope(engine) as session:
        return list(session.exec(select(Delivery).order_by(Delivery.id)).all())


def test_a_correction_reaches_every_earlier_reader_once_and_later_readers_read_it(
        engine, runner, clock, slack, smtp, desk):
    original = delivered_once(runner, clock, slack, smtp, engine)
    unsubscribe(engine, "leaving@example.org")
    before = len(mails(smtp))
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ed", note=NOTE)
    clock.now += timedelta(minutes=5)
    runner.run_once()
    assert len(mails(smtp)) == before and slack.updates == []  # pending: nobody hears of it yet
    with db.session_scope(engine) as session:
        with pytest.raises(roles.NotPermitted, match="two-person rule: ed made this correction"):
            revisions.approve_correction(session, desk, by="ed", two_person=True)
    with db.session_scope(engine) as session:
        done = revisions.approve_correction(session, desk, by="chief", two_person=True, now=clock.now)
        assert (done.revision.number, done.notices) == (2, 4)  # html, text, the channel, the webhook
        assert sitreps.get(session, desk).status.value == "approved"
    clock.now += timedelta(minutes=1)
    runner.run_once()

    # Slack, bot token: the original post updated in place, then a reply in its thread.
    (update,) = slack.updates
    assert (update["channel"], update["ts"]) == ("C0DESK01", original["ts"])
    texts = json.dumps(update["blocks"], ensure_ascii=False)
    assert "Corrected" in texts and NOTE in texts and "fourteen grain carriers" in texts
    (reply,) = [p for p in slack.posts if p.get("thread_ts")]
    assert (reply["channel"], reply["thread_ts"]) == ("C0DESK01", original["ts"])
    assert NOTE in json.dumps(reply["blocks"], ensure_ascii=False)
    # A webhook cannot be updated: a new post there.
    hooked = [p for p in slack.posts if p["via"] == "webhook"]
    assert len(hooked) == 2 and "Correction to" in hooked[-1]["text"]
    # Email: a short correction to each earlier reader still subscribed, and no one else.
    notices = mails(smtp)[before:]
    assert sorted(m["To"] for m in notices) == ["html@example.org", "text@example.org"]
    for message in notices:
        assert message["Subject"] == f"Correction: {TITLE}"
        assert message["List-Unsubscribe"] and message["List-Unsubscribe-Post"]
        text = message.get_body(("plain",)).get_content()
        assert NOTE in text and "- bullet: Dock workers in Odesa" in text and "fourteen grain carriers" in text
        assert "Unsubscribe:" in text
    html = next(m for m in notices if m["To"] == "html@example.org").get_body(("html",)).get_content()
    assert "<del>" in html and "<ins>" in html and "Unsubscribe" in html

    # Run again: nothing is sent twice.
    sent = (len(mails(smtp)), len(slack.posts), len(slack.updates))
    runner.run_once()
    runner.run_once()
    assert (len(mails(smtp)), len(slack.posts), len(slack.updates)) == sent

    # The daily reader's window comes: the corrected SITREP, no correction notice.
    clock.now = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    runner.run_once()
    (daily,) = [m for m in mails(smtp) if m["To"] == "daily@example.org"]
    assert not daily["Subject"].startswith("Correction")
    assert "fourteen grain carriers" in daily.get_body(("plain",)).get_content()
    with db.session_scope(engine) as session:
        (event,) = session.exec(select(Event).where(Event.type == "sitrep.corrected")).all()
        assert event.payload["data"]["revision"] == 2 and event.payload["data"]["approved_by"] == "chief"


def test_a_retraction_replaces_the_posts_and_tells_every_earlier_reader(engine, runner, clock, slack, smtp, desk):
    original = delivered_once(runner, clock, slack, smtp, engine)
    unsubscribe(engine, "leaving@example.org")
    before = len(mails(smtp))
    with db.session_scope(engine) as session:
        done = revisions.retract(session, desk, by="chief", reason="The strike report was false.", now=clock.now)
        assert done.notices == 4 and sitreps.get(session, desk).status.value == "withdrawn"
    with db.session_scope(engine) as session, pytest.raises(WorkflowError, match="retracted already"):
        revisions.retract(session, desk, by="chief", reason="again")
    clock.now += timedelta(minutes=1)
    runner.run_once()
    (update,) = slack.updates
    assert update["ts"] == original["ts"]
    texts = json.dumps(update["blocks"], ensure_ascii=False)
    assert "Retracted" in texts and "Dock workers" not in texts  # the SITREP itself is gone from the post
    (reply,) = [p for p in slack.posts if p.get("thread_ts") == original["ts"]]
    assert "The strike report was false." in json.dumps(reply["blocks"], ensure_ascii=False)
    notices = mails(smtp)[before:]
    assert sorted(m["To"] for m in notices) == ["html@example.org", "text@example.org"]
    assert {m["Subject"] for m in notices} == {f"Retraction: {TITLE}"}
    sent = (len(mails(smtp)), len(slack.posts), len(slack.updates))
    runner.run_once()
    assert (len(mails(smtp)), len(slack.posts), len(slack.updates)) == sent
    clock.now = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    runner.run_once()
    assert not [m for m in mails(smtp) if m["To"] == "daily@example.org"]  # withdrawn: never sent on
    with db.session_scope(engine) as session:
        assert [e.payload["data"]["kind"] for e in session.exec(
            select(Event).where(Event.type == "sitrep.retracted")).all()] == ["retraction"]


def test_a_transient_slack_error_retries_the_notice_without_a_second_reply(engine, runner, clock, slack, smtp, desk):
    delivered_once(runner, clock, slack, smtp, engine)
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ed", note=NOTE)
        revisions.approve_correction(session, desk, by="chief", now=clock.now)
    slack.fail_next(500, error="internal_error", times=3)  # the update, and slack-sdk's two retries
    clock.now += timedelta(minutes=1)
    runner.run_once()
    assert slack.updates == []
    clock.now += timedelta(hours=1)
    runner.run_once()
    assert len(slack.updates) == 1 and len([p for p in slack.posts if p.get("thread_ts")]) == 1
    with db.session_scope(engine) as session:
        notice = session.exec(select(Delivery).where(Delivery.window_key == f"correction:{desk}:2",
                                                     Delivery.subscriber_id == subscribers.get(
                                                         session, "C0DESK01").id)).one()
        assert notice.status.value == "sent" and notice.attempts == 2


def test_audit_records_corrections_with_their_actors(engine, desk):
    from dispatch.desk import audit

    with audit.acting_as(audit.Actor("cli", "ed")), db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ed", note=NOTE)
    with audit.acting_as(audit.Actor("user", "chief")), db.session_scope(engine) as session:
        revisions.approve_correction(session, desk, by="chief", two_person=True)
    with db.session_scope(engine) as session:
        rows = [(e.actor, e.action) for e in session.exec(
            select(AuditEntry).where(AuditEntry.target == f"sitrep:{desk}").order_by(AuditEntry.id)).all()]
    assert ("ed", "sitrep.correction") in rows
    assert ("chief", "sitrep.correction.approved") in rows
    assert ("chief", "sitrep.changed") in rows  # the content itself, changed by the approval


def test_a_digest_post_keeps_its_other_sitreps_when_one_is_corrected_or_retracted(engine, runner, clock, slack, smtp):
    other = STANDARD.replace("Port Strike Halts Grain Shipments from Odesa", "Ferries Resume in the Baltic")
    with db.session_scope(engine) as session:
        ids = [sitreps.import_parsed(session, parse(text), actor="ed").sitrep.id for text in (STANDARD, other)]
        s = subscribers.add_subscriber(session, "C0DAILY1", kind=SubscriberKind.slack,
                                       prefs=Preferences(cadence="daily", send_at="07:00", timezone="UTC"))
        s.created_at = APPROVED - timedelta(days=3)
        for sitrep_id in ids:
            sitreps.approve_sitrep(session, sitrep_id, by="chief", at=APPROVED)
    clock.now = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    runner.run_once()
    (digest_post,) = slack.posts  # one message carrying both
    with db.session_scope(engine) as session:
        revisions.correct(session, ids[0], parse(CORRECTED), by="ed", note=NOTE)
        assert revisions.approve_correction(session, ids[0], by="chief", now=clock.now).notices == 1
    clock.now += timedelta(minutes=1)
    runner.run_once()
    (update,) = slack.updates
    assert update["ts"] == digest_post["ts"]
    shown = json.dumps(update["blocks"], ensure_ascii=False)
    assert "Corrected" in shown and "fourteen grain carriers" in shown and "Ferries Resume in the Baltic" in shown
    with db.session_scope(engine) as session:
        assert revisions.retract(session, ids[1], by="chief", reason="No ferries ran.", now=clock.now).notices == 1
    clock.now += timedelta(minutes=1)
    runner.run_once()
    retracted = json.dumps(slack.updates[-1]["blocks"], ensure_ascii=False)
    assert slack.updates[-1]["ts"] == digest_post["ts"]
    assert "Retracted" in retracted and "Withdrawn: Ferries Resume in the Baltic" in retracted
    assert "fourteen grain carriers" in retracted  # the other SITREP stays, as corrected
    assert len([p for p in slack.posts if p.get("thread_ts") == digest_post["ts"]]) == 2


def test_a_correction_overtaken_by_a_retraction_is_not_sent(engine, runner, clock, slack, smtp, desk):
    delivered_once(runner, clock, slack, smtp, engine)
    before = len(mails(smtp))
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ed", note=NOTE)
        revisions.approve_correction(session, desk, by="chief", now=clock.now)
        revisions.retract(session, desk, by="chief", reason="All of it was wrong.", now=clock.now)
    clock.now += timedelta(minutes=1)
    runner.run_once()
    assert {m["Subject"] for m in mails(smtp)[before:]} == {f"Retraction: {TITLE}"}
    with db.session_scope(engine) as session:
        skipped = session.exec(select(Delivery).where(Delivery.window_key == f"correction:{desk}:2")).all()
        assert {d.status.value for d in skipped} == {"skipped"}
        assert {d.last_error for d in skipped} == {"the SITREP is withdrawn now"}
