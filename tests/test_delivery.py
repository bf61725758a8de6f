"""End to end over real loopback servers: plan, render, send, record.
Every fault ends with each delivery sent once, or pending/failed with its
reason; none lost, none sent twice. On SQLite and on PostgreSQL."""

import email
import email.policy
import json
import re
import socket
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr
from sqlmodel import select

from dispatch import db, digest, ledger, revisions, sitreps, subscribers, views
from dispatch.compose import Composer
from dispatch.config import Settings
from dispatch.render import Personal
from dispatch.models import Delivery, DeliveryAttempt, Subscriber, SubscriberKind, SubscriberStatus
from dispatch.scheduler import Runner
from dispatch.sink import SlackSink
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .servers import scripted_smtp, tls_files

TOKEN = "xoxb-test"
APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
MORNING = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)  # after every 07:00 UTC window


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def smtp(tmp_path):
    sink, handler = scripted_smtp(tmp_path / "mail")
    yield sink, handler
    sink.stop()


@pytest.fixture
def slack(tmp_path):
    sink = SlackSink(tmp_path / "slack", token=TOKEN, missing_channels=("C0GONE01",)).start()
    yield sink
    sink.stop()


@pytest.fixture
def settings(database_url, smtp, slack):
    return Settings(database_url=database_url, smtp_host=smtp[0].host, smtp_port=smtp[0].port,
                    mail_from="Briefings <news@example.org>", slack_base_url=slack.base_url,
                    slack_bot_token=SecretStr(TOKEN), slack_min_interval=0, secret_key=SecretStr("k"),
                    public_url="https://news.example.org/", sender_threads=2, batch_size=3, bounce_limit=2,
                    slack_webhook_hosts=("127.0.0.1",), outbound_private_networks=("127.0.0.1/32",))  # the local Slack sink's webhooks


@pytest.fixture
def clock():
    return Clock(MORNING)


@pytest.fixture
def runner(settings, engine, clock):
    r = Runner(settings, engine, clock=clock)
    yield r
    r.close()


def setup_readers(engine, readers):
    """Import and approve the standard fixture; readers are (kind, address, prefs)."""
    with db.session_scope(engine) as session:
        result = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
        for kind, address, prefs in readers:
            s = subscribers.add_subscriber(session, address, kind=kind, prefs=prefs, webhook_hosts=("127.0.0.1",),
                                           private_networks=("127.0.0.1/32",))
            s.created_at = APPROVED - timedelta(days=3)
        sitreps.approve_sitrep(session, result.sitrep.id, by="chief", at=APPROVED)
        return result.sitrep.id


def email_reader(address, **prefs):
    return (SubscriberKind.email, address, Preferences(**prefs))


def deliveries(engine):
    with db.session_scope(engine) as session:
        return {s.address: d for d, s in session.exec(
            select(Delivery, Subscriber).join(Subscriber, Subscriber.id == Delivery.subscriber_id)).all()}


def messages(handler):
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(handler.folder.glob("*.eml"))]


def test_every_reader_gets_one_digest_and_a_second_run_sends_nothing(engine, runner, smtp, slack, clock):
    _, handler = smtp
    setup_readers(engine, [
        email_reader("html@example.org", name="Html Reader", regions=["europe-eurasia"]),
        email_reader("text@example.org", format="text"),
        email_reader("follows@example.org", analysts=["Samir Haddad"]),
        email_reader("americas@example.org", regions=["americas"]),  # nothing for them
        (SubscriberKind.slack, "C0DESK01", Preferences()),
        (SubscriberKind.slack, slack.webhook_url("ops"), Preferences(cadence="immediate")),
    ])
    summary = runner.run_once()
    assert summary.by_status == {"sent": 5}
    assert summary.failed == 0
    got = messages(handler)
    assert sorted(m["To"] for m in got) == ["follows@example.org", "html@example.org", "text@example.org"]
    by_to = {m["To"]: m for m in got}
    assert by_to["html@example.org"].get_content_type() == "multipart/alternative"
    assert by_to["text@example.org"].get_content_type() == "text/plain"
    assert by_to["html@example.org"]["Subject"] == "Port Strike Halts Grain Shipments from Odesa"
    assert "Hello Html Reader," in by_to["html@example.org"].get_payload()[0].get_content()
    follows_html = by_to["follows@example.org"].get_payload()[1].get_content()
    assert follows_html.index("Samir Haddad") < follows_html.index("Dana Whitfield")  # followed analyst first
    rows = deliveries(engine)
    assert {a: d.status.value for a, d in rows.items()} == {
        "html@example.org": "sent", "text@example.org": "sent", "follows@example.org": "sent",
        "C0DESK01": "sent", slack.webhook_url("ops"): "sent"}
    assert rows["html@example.org"].receipt == by_to["html@example.org"]["Message-ID"]
    assert json.loads(rows["C0DESK01"].receipt)["channel"] == "C0DESK01"
    assert [p["channel"] for p in slack.posts if p["via"] == "api"] == ["C0DESK01"]
    # The same morning again, and a later hour: nothing planned twice, nothing sent twice.
    assert runner.run_once().by_status == {}
    clock.now += timedelta(hours=3)
    assert runner.run_once().by_status == {}
    assert len(messages(handler)) == 3 and len(slack.posts) == 2


def test_through_a_relay_with_starttls_and_auth(engine, settings, clock, tmp_path):
    from dispatch.config import SmtpSecurity

    context, ca_file = tls_files(tmp_path)
    sink, handler = scripted_smtp(tmp_path / "relay", auth=("dispatch", "s3cret"), tls_context=context,
                                  require_starttls=True)
    relay = settings.model_copy(update={
        "smtp_port": sink.port, "smtp_security": SmtpSecurity.starttls, "smtp_username": "dispatch",
        "smtp_password": SecretStr("s3cret"), "smtp_ca_file": ca_file})
    setup_readers(engine, [email_reader("a@example.org"), email_reader("b@example.org", format="text")])
    runner = Runner(relay, engine, clock=clock)
    try:
        assert runner.run_once().by_status == {"sent": 2}
    finally:
        runner.close()
        sink.stop()
    assert sorted(m["To"] for m in messages(handler)) == ["a@example.org", "b@example.org"]


def test_smtp_down_then_back(engine, settings, clock, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    setup_readers(engine, [email_reader("r@example.org")])
    down = Runner(settings.model_copy(update={"smtp_port": dead_port}), engine, clock=clock)
    summary = down.run_once()
    assert summary.by_status == {"pending": 1}
    (d,) = deliveries(engine).values()
    assert d.attempts == 1 and "connection refused" in d.last_error and d.next_attempt_at > clock.now
    # Nothing is due until the backoff has passed.
    assert down.run_once().by_status == {}
    sink, handler = scripted_smtp(tmp_path / "later", port=dead_port)
    try:
        clock.now += timedelta(hours=3)
        assert down.run_once().by_status == {"sent": 1}
    finally:
        down.close()
        sink.stop()
    assert len(messages(handler)) == 1
    with db.session_scope(engine) as session:
        outcomes = [a.outcome for a in session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id))]
    assert outcomes == ["retry", "sent"]


def test_refused_recipients_bounce_and_greylisting_is_retried(engine, runner, smtp, clock):
    _, handler = smtp
    handler.refuse["gone@example.org"] = "550 5.1.1 no such user"
    handler.data_replies.append("451 4.7.1 greylisted, try again later")
    setup_readers(engine, [email_reader("gone@example.org"), email_reader("grey@example.org")])
    summary = runner.run_once()
    assert sorted(summary.by_status.items()) == [("failed", 1), ("pending", 1)]
    rows = deliveries(engine)
    assert rows["gone@example.org"].status.value == "failed" and "550" in rows["gone@example.org"].last_error
    assert rows["grey@example.org"].status.value == "pending" and "451" in rows["grey@example.org"].last_error
    with db.session_scope(engine) as session:
        gone = subscribers.get(session, "gone@example.org")
        assert (gone.bounce_count, gone.status) == (1, SubscriberStatus.active)
    clock.now += timedelta(hours=3)
    assert runner.run_once().by_status == {"sent": 1}
    assert [m["To"] for m in messages(handler)] == ["grey@example.org"]
    # A second hard bounce (bounce_limit=2) marks the address bounced.
    with db.session_scope(engine) as session:
        result = sitreps.import_parsed(session, parse((FIXTURES / "unquoted_several.txt").read_text()), actor="ed")
        sitreps.approve_sitrep(session, result.sitrep.id, by="chief", at=clock.now)
    clock.now += timedelta(days=1)
    runner.run_once()
    with db.session_scope(engine) as session:
        gone = subscribers.get(session, "gone@example.org")
        assert gone.status == SubscriberStatus.bounced and "550" in gone.status_reason


def test_each_pipelined_answer_is_recorded_against_its_own_delivery(engine, runner, smtp):
    """With PIPELINING a message's data answer arrives with the next message's
    replies (or when its run is recorded): a refusal mid-batch lands on the
    delivery it was for, across record runs and sender threads."""
    _, handler = smtp
    assert handler.pipelining
    readers = [f"r{n}@example.org" for n in range(47)]
    refused = {"r3@example.org": "554 5.7.1 refused by policy", "r20@example.org": "451 4.3.0 try later",
               "r21@example.org": "554 5.6.0 content refused", "r46@example.org": "451 4.7.1 greylisted"}
    handler.refuse_data.update(refused)
    setup_readers(engine, [email_reader(a) for a in readers])
    runner.run_once()
    rows = deliveries(engine)
    for address in readers:
        row = rows[address]
        if address in refused:
            expected = "failed" if refused[address].startswith("5") else "pending"
            assert (row.status.value, refused[address].split()[0] in row.last_error) == (expected, True), address
        else:
            assert row.status.value == "sent", (address, row.last_error)
    received = {m["To"]: m["Message-ID"] for m in messages(handler)}
    assert received == {a: rows[a].receipt for a in readers if a not in refused}


def test_a_batch_is_sent_without_a_session_that_takes_the_write_lock(engine, runner, smtp, clock, monkeypatch):
    """The batch's readers and SITREPs are read in a read-only transaction
    (on SQLite a deferred one, which neither takes nor waits for the write
    lock other senders' claims and records need), and its outcomes written
    without a session."""
    _, handler = smtp
    setup_readers(engine, [email_reader(f"r{n}@example.org") for n in range(5)])
    runner.plan()
    with db.session_scope(engine) as session:
        claimed = ledger.claim(session, now=clock(), limit=10)
    assert len(claimed) == 5

    def no_session(_engine):
        raise AssertionError("a batch opened a read-write session")

    monkeypatch.setattr(db, "session_scope", no_session)
    outcomes = runner.sender.process(claimed)
    monkeypatch.undo()
    assert [o.status for o in outcomes] == ["sent"] * 5
    assert {d.status.value for d in deliveries(engine).values()} == {"sent"}
    assert len(messages(handler)) == 5


def test_slack_rate_limit_server_error_and_missing_channel(engine, runner, slack, clock):
    setup_readers(engine, [(SubscriberKind.slack, "C0BUSY01", Preferences()),
                           (SubscriberKind.slack, "C0GONE01", Preferences())])
    slack.fail_next(429, retry_after=120)  # too long to wait in place: back to the ledger
    summary = runner.run_once()
    rows = deliveries(engine)
    busy, gone = rows["C0BUSY01"], rows["C0GONE01"]
    assert busy.status.value == "pending" and "rate limit" in busy.last_error
    assert busy.next_attempt_at >= clock.now + timedelta(seconds=120)  # Retry-After honoured
    assert gone.status.value == "failed" and "channel_not_found" in gone.last_error
    with db.session_scope(engine) as session:
        channel = subscribers.get(session, "C0GONE01")
        assert channel.status == SubscriberStatus.disabled and "channel_not_found" in channel.status_reason
    assert summary.failed == 1
    clock.now += timedelta(minutes=3)
    slack.fail_next(500, error="internal_error", times=3)
    assert runner.run_once().by_status == {"pending": 1}
    clock.now += timedelta(hours=3)
    assert runner.run_once().by_status == {"sent": 1}
    assert [p["channel"] for p in slack.posts] == ["C0BUSY01"]


def test_a_webhook_answer_is_never_stored_as_it_came_and_a_redirect_never_followed(engine, runner, slack, clock):
    hook, moved = slack.webhook_url("ops"), slack.webhook_url("moved")
    setup_readers(engine, [(SubscriberKind.slack, hook, Preferences()), (SubscriberKind.slack, moved, Preferences())])
    original = slack.answer

    def answer(path, headers, body):  # one hook answers with a page of HTML, the other moved away
        if path.endswith("/moved"):
            return 302, "", {"Location": slack.webhook_url("elsewhere")}
        return 400, "<html>" + "<p>not what Slack says</p>" * 40_000 + "</html>", {}

    slack.answer = answer
    assert runner.run_once().by_status == {"failed": 2}
    slack.answer = original
    rows = deliveries(engine)
    assert rows[moved].last_error == ("Slack webhook answered HTTP 302, a redirect, which is never followed; "
                                      "check the webhook URL")
    assert slack.gets == []  # nothing went to where the redirect pointed
    error = rows[hook].last_error
    assert error.startswith("Slack refused the message to webhook (HTTP 400): <html><p>not what Slack says")
    assert len(error) <= 150 and error.isprintable()
    with db.session_scope(engine) as session:
        details = [a.detail for d in rows.values() for a in session.exec(
            select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == d.id)).all()]
    assert details and all(len(d) <= 150 for d in details)


def test_changes_between_planning_and_sending(engine, runner, smtp):
    _, handler = smtp
    sitrep_id = setup_readers(engine, [email_reader("stays@example.org"), email_reader("leaves@example.org"),
                                       email_reader("broken@example.org")])
    runner.plan()
    with db.session_scope(engine) as session:
        subscribers.edit_subscriber(session, "leaves@example.org", Preferences(), status=SubscriberStatus.unsubscribed)
        subscribers.get(session, "broken@example.org").address = "broken@@example"
        corrected = parse((FIXTURES / "standard.txt").read_text().replace("about a dozen", "fourteen"))
        # Released: corrected, not edited; nobody has it yet, so no notice, and the digest carries the correction.
        revisions.correct(session, sitrep_id, corrected, by="ed", note="fourteen carriers")
        assert revisions.approve_correction(session, sitrep_id, by="chief").notices == 0
    summary = runner.drain()
    assert sorted(o.status for o in summary) == ["sent", "skipped", "skipped"]
    rows = deliveries(engine)
    assert rows["leaves@example.org"].last_error == "the subscriber is unsubscribed"
    assert rows["broken@@example"].last_error.startswith("the address is not valid any more")
    (sent,) = messages(handler)
    assert "fourteen grain carriers" in sent.get_payload()[0].get_content()  # rendered at send time


def test_an_edit_between_two_batches_reaches_the_second(engine, runner, smtp, clock):
    """The sender keeps SITREP views between batches by revision: a correction
    approved after the first batch went out is what the next batch renders."""
    from dispatch import ledger

    _, handler = smtp
    sitrep_id = setup_readers(engine, [email_reader("first@example.org"), email_reader("second@example.org")])
    runner.plan()
    with db.session_scope(engine) as session:
        first = ledger.claim(session, now=clock.now, limit=1)
    assert [o.status for o in runner.sender.process(first)] == ["sent"]
    with db.session_scope(engine) as session:  # released: corrected, and the correction approved
        corrected = parse((FIXTURES / "standard.txt").read_text().replace("about a dozen", "fourteen"))
        revisions.correct(session, sitrep_id, corrected, by="ed", note="fourteen carriers")
        revisions.approve_correction(session, sitrep_id, by="chief")
    assert [o.status for o in runner.drain()] == ["sent"]
    before, after = messages(handler)
    assert "fourteen grain carriers" not in before.get_payload()[0].get_content()
    assert "fourteen grain carriers" in after.get_payload()[0].get_content()


def test_withdrawn_before_sending_is_skipped(engine, runner, smtp):
    sitrep_id = setup_readers(engine, [email_reader("r@example.org")])
    runner.plan()
    with db.session_scope(engine) as session:
        sitreps.withdraw_sitrep(session, sitrep_id, by="chief", reason="wrong")
    (outcome,) = runner.drain()
    assert (outcome.status, outcome.detail) == ("skipped", "every SITREP in it was withdrawn")
    assert messages(smtp[1]) == []


def test_immediate_readers_get_each_approval_once(engine, runner, smtp, clock):
    _, handler = smtp
    sitrep_id = setup_readers(engine, [email_reader("now@example.org", cadence="immediate")])
    assert runner.run_once().by_status == {"sent": 1}
    assert runner.run_once().by_status == {}
    with db.session_scope(engine) as session:  # withdrawn and approved again: a new approval, sent again
        sitreps.withdraw_sitrep(session, sitrep_id, by="chief")
        sitreps.approve_sitrep(session, sitrep_id, by="chief", at=clock.now)
    assert runner.run_once().by_status == {"sent": 1}
    assert len(messages(handler)) == 2


def test_readers_who_share_a_body_each_get_what_rendering_them_alone_gives(engine, runner, settings, smtp):
    """The sender renders a shared body once and splices each reader's values
    into bytes encoded once; every received part must equal rendering that
    reader alone, with the links the message carries."""
    _, handler = smtp
    names = ["Ana Ortiz", 'O\'Brien & "Sons" <admin>', "Zoë\u00a0Núñez", "", "Ω" * 40]
    setup_readers(engine, [email_reader(f"{fmt}{n}@example.org", name=name, format=fmt)
                           for fmt in ("html", "text") for n, name in enumerate(names)])
    assert runner.run_once().by_status == {"sent": 2 * len(names)}
    composer = Composer(settings, engine)
    with db.session_scope(engine) as session:
        approved = views.approved_sitreps(session)
        people = {r.address: r for _, r in views.readers(session, range(1, 100)).values()}
    for message in messages(handler):
        reader = people[message["To"]]
        # The parser keeps the wire's CRLF line ends in 8bit parts; the renderer writes LF.
        parts = [p.get_content().replace("\r\n", "\n")
                 for p in (message.get_payload() if message.is_multipart() else [message])]
        text = parts[0]
        personal = Personal.for_recipient(
            reader, preferences_url=re.search(r"https://news\.example\.org/preferences/\S+", text).group(0),
            unsubscribe_url=message["List-Unsubscribe"].split(">")[0].lstrip("<"),
            view_url=re.search(r"https://news\.example\.org/view/\S+", text).group(0))
        alone = composer.email_renderer.render(digest.build_digest(reader, "k", approved), personal)
        assert text == alone.text
        assert (parts[1] if len(parts) > 1 else None) == alone.html
