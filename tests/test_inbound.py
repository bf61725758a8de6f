"""`dispatch inbound` over real SMTP and LMTP: DSNs and ARF reports built
with the email package from messages dispatch delivered (issue 16, point 2)."""

import copy
import email
import email.policy
import smtplib
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from pydantic import SecretStr
from sqlmodel import select

from dispatch import db, links, sitreps, subscribers
from dispatch.config import Settings
from dispatch.inbound import receiver
from dispatch.models import DeliveryEvent, Subscriber, SubscriberStatus
from dispatch.scheduler import Runner
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .servers import scripted_smtp

SECRET = "inbound-test-key"
APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
BOUNCES = "bounces@example.org"


@pytest.fixture
def delivered(engine, tmp_path):
    """Two readers, each sent one digest with a VERP return path; the messages as the relay got them."""
    sink, handler = scripted_smtp(tmp_path / "mail")
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False), smtp_host=sink.host,
                        smtp_port=sink.port, mail_from="Briefings <news@example.org>",
                        secret_key=SecretStr(SECRET), public_url="https://news.example.org/",
                        bounce_address=BOUNCES, soft_bounce_limit=1.5)
    with db.session_scope(engine) as session:
        result = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
        for address in ("gone@example.net", "full@example.net"):
            s = subscribers.add_subscriber(session, address, prefs=Preferences(cadence="immediate"))
            s.created_at = APPROVED - timedelta(days=3)
        sitreps.approve_sitrep(session, result.sitrep.id, by="chief", at=APPROVED)
    runner = Runner(settings, engine, clock=lambda: APPROVED + timedelta(hours=1))
    try:
        assert runner.run_once().by_status["sent"] == 2
    finally:
        runner.close()
        sink.stop()
    sent = {}
    for mail_from, rcpt, _ in handler.envelopes:
        (path,) = [p for p in handler.folder.glob("*.eml") if rcpt.replace("@", "_") in p.name]
        sent[rcpt] = (mail_from, email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32))
    server = receiver.InboundServer(receiver.build_inbox(settings, engine), port=0).start()
    yield settings, sent, server
    server.stop()


def dsn(original, *, status="5.1.1", action="failed", recipient):
    """A DSN as Postfix builds one: human part, delivery-status, the returned message."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.net (Mail Delivery System)"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = email.utils.make_msgid(domain="mx.example.net")
    report.attach(MIMEText(f"I'm sorry to have to inform you that your message could not be delivered.\n"
                           f"<{recipient}>: host mx said: 550 {status} no such user\n"))
    status_part = EmailMessage()
    status_part.set_type("message/delivery-status")
    per_message = email.message.Message()
    per_message["Reporting-MTA"] = "dns; mx.example.net"
    per_recipient = email.message.Message()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = f"smtp; 550 {status} <{recipient}>: Recipient address rejected"
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    report.attach(MIMEMessage(original))
    return report.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))


def arf(original, *, recipient, mail_from):
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@isp.example.com"
    report["Subject"] = "Abuse report"
    report["Message-ID"] = email.utils.make_msgid(domain="isp.example.com")
    report.attach(MIMEText("This is an email abuse report.\n"))
    fields = email.message.Message()
    fields["Feedback-Type"] = "abuse"
    fields["User-Agent"] = "ExampleFBL/1.0"
    fields["Version"] = "1"
    fields["Original-Mail-From"] = f"<{mail_from}>"
    fields["Original-Rcpt-To"] = f"<{recipient}>"
    part = MIMEMessage(fields, "feedback-report")
    report.attach(part)
    report.attach(MIMEMessage(original))
    return report.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))


def status(engine, address):
    with db.session_scope(engine) as session:
        s = subscribers.find_by_address(session, address)
        return s.status, s.status_reason


def smtp_send(server, rcpt, data, *, lmtp=False, sender=""):
    client = (smtplib.LMTP if lmtp else smtplib.SMTP)(server.host, server.port, timeout=10)
    try:
        return client.sendmail(sender, [rcpt], data)
    finally:
        client.quit()


def test_a_hard_bounce_over_smtp_marks_the_reader_bounced(engine, delivered):
    settings, sent, server = delivered
    mail_from, original = sent["gone@example.net"]
    assert links.verp_part(BOUNCES, mail_from)  # the return path carries the token
    data = dsn(original, recipient="gone@example.net")
    smtp_send(server, mail_from, data)
    assert status(engine, "gone@example.net")[0] == SubscriberStatus.bounced
    assert status(engine, "full@example.net")[0] == SubscriberStatus.active
    smtp_send(server, mail_from, data)  # the same DSN again: nothing changes twice
    with db.session_scope(engine) as session:
        (event,) = session.exec(select(DeliveryEvent)).all()
        assert (event.kind, event.status_code, event.source) == ("hard_bounce", "5.1.1", "smtp")


def test_soft_bounces_over_lmtp_and_the_bare_bounce_address_by_message_id(engine, delivered):
    settings, sent, server_smtp = delivered
    lmtp = receiver.InboundServer(receiver.build_inbox(settings, engine), port=0, lmtp=True).start()
    try:
        _, original = sent["full@example.net"]
        # Mailbox full, to the bare bounce address: found by the returned Message-ID and the address.
        smtp_send(lmtp, BOUNCES, dsn(original, status="5.2.2", recipient="full@example.net"), lmtp=True)
        assert status(engine, "full@example.net")[0] == SubscriberStatus.active  # one point of 1.5
        with db.session_scope(engine) as session:
            s = subscribers.find_by_address(session, "full@example.net")
            s.soft_bounce_at = s.soft_bounce_at - timedelta(days=1)  # a day passes
        smtp_send(lmtp, BOUNCES, dsn(original, status="4.2.2", action="delayed", recipient="full@example.net"),
                  lmtp=True)
        assert status(engine, "full@example.net")[0] == SubscriberStatus.bounced
    finally:
        lmtp.stop()


def test_a_complaint_unsubscribes(engine, delivered):
    settings, sent, server = delivered
    mail_from, original = sent["gone@example.net"]
    smtp_send(server, BOUNCES, arf(original, recipient="gone@example.net", mail_from=mail_from))
    assert status(engine, "gone@example.net") == (SubscriberStatus.unsubscribed, "complaint")


def test_a_mailto_unsubscribe_works(engine, delivered):
    settings, sent, server = delivered
    _, original = sent["gone@example.net"]
    unsubscribe = [u for u in original["List-Unsubscribe"].split(",") if "mailto:" in u][0].strip(" <>\r\n\t")
    to, _, query = unsubscribe.removeprefix("mailto:").partition("?")
    from urllib.parse import parse_qs

    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "gone@example.net", to, parse_qs(query)["subject"][0]
    mail.set_content("")
    smtp_send(server, to, mail.as_bytes(policy=email.policy.SMTP), sender="gone@example.net")
    assert status(engine, "gone@example.net")[0] == SubscriberStatus.unsubscribed


def test_forged_and_unattributable_mail_is_refused_and_nothing_written(engine, delivered):
    settings, sent, server = delivered
    _, original = sent["gone@example.net"]
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp_send(server, "bounces+d1-aaaaaaaaaaaaa@example.org", dsn(original, recipient="gone@example.net"))
    assert refused.value.recipients["bounces+d1-aaaaaaaaaaaaa@example.org"][0] == 550
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp_send(server, "someone@example.org", b"Subject: hi\r\n\r\nhi\r\n")
    # To the bare address, naming the delivery but another address: refused.
    with pytest.raises(smtplib.SMTPDataError) as data_refused:
        smtp_send(server, BOUNCES, dsn(original, recipient="attacker@example.com"))
    assert data_refused.value.smtp_code == 550
    with pytest.raises(smtplib.SMTPDataError):
        smtp_send(server, BOUNCES, b"From: x@example.com\r\nSubject: hello\r\n\r\nnot a bounce\r\n")
    with db.session_scope(engine) as session:
        assert session.exec(select(DeliveryEvent)).all() == []
        assert {s.status for s in session.exec(select(Subscriber)).all()} == {SubscriberStatus.active}


def test_a_readers_own_message_id_edited_to_name_another_delivery_is_refused(engine, delivered):
    """Every reader sees their Message-ID; one edited to another reader's
    delivery id (and naming that reader) must not bounce or unsubscribe them."""
    settings, sent, server = delivered
    _, mine = sent["gone@example.net"]
    _, theirs = sent["full@example.net"]
    own_id, their_id = mine["Message-ID"], theirs["Message-ID"]
    mine_number = int(own_id.split("-", 1)[1].split(".", 1)[0])
    their_number = int(their_id.split("-", 1)[1].split(".", 1)[0])
    forged = copy.deepcopy(mine)
    forged.replace_header("Message-ID", own_id.replace(f"delivery-{mine_number}.", f"delivery-{their_number}."))
    forged.replace_header("To", "full@example.net")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp_send(server, BOUNCES, dsn(forged, recipient="full@example.net"))
    assert refused.value.smtp_code == 550
    with db.session_scope(engine) as session:
        assert session.exec(select(DeliveryEvent)).all() == []
    assert status(engine, "full@example.net")[0] == SubscriberStatus.active


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000))
def test_any_bytes_to_the_bounce_address_are_attributed_or_refused(engine, data):
    """Hostile input: never an exception, never a write without attribution."""
    inbox = receiver.build_inbox(Settings(secret_key=SecretStr(SECRET), bounce_address=BOUNCES), engine)
    reply = inbox.deliver(data, recipient=BOUNCES, source="smtp", null_sender=True)
    assert reply.code in (250, 550, 552, 554)
    with db.session_scope(engine) as session:
        assert session.exec(select(DeliveryEvent)).all() == []


def test_dispatch_log_shows_what_came_back(engine, delivered, run, monkeypatch):
    import json

    settings, sent, server = delivered
    mail_from, original = sent["gone@example.net"]
    smtp_send(server, mail_from, dsn(original, recipient="gone@example.net"))
    delivery_id = links.read_verp_token(SECRET, links.verp_part(BOUNCES, mail_from))
    monkeypatch.setenv("DISPATCH_DATABASE_URL", settings.database_url)
    result = run("log", "--delivery", delivery_id, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[-1]["outcome"] == "came back: hard_bounce" and "5.1.1" in rows[-1]["detail"]
    assert [r["outcome"] for r in rows][0] != "came back: hard_bounce"  # the send came first
