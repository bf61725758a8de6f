"""/webhooks/ses, sendgrid, mailgun and postmark through the web app, on
SQLite and PostgreSQL: requests signed with keys made here, about digests
dispatch really sent (their Message-IDs read from the SMTP sink); forged,
replayed, stale, oversized and unattributable requests change nothing
(issue 16, point 3)."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from dispatch import db, subscribers
from dispatch.config import Settings
from dispatch.models import AuditEntry, DeliveryEvent, SubscriberStatus, WebhookNonce
from dispatch.scheduler import Runner
from dispatch.web import create_app

from . import providertools as pt
from .deliverytools import LATER, seed

READERS = ("gone@example.net", "full@example.net", "angry@example.net", "fine@example.net")


@dataclass
class Hooks:
    client: TestClient
    engine: object
    ids: dict  # reader → the Message-ID of the digest dispatch sent them
    fetcher: pt.LocalFetcher

    def status(self, address):
        with db.session_scope(self.engine) as session:
            s = subscribers.find_by_address(session, address)
            return s.status, s.status_reason, s.soft_bounce_score

    def events(self):
        with db.session_scope(self.engine) as session:
            return [(e.source, e.kind, e.status_code, e.delivery_id is not None)
                    for e in session.exec(select(DeliveryEvent).order_by(DeliveryEvent.id)).all()]

    def post(self, path, data, headers):
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return self.client.post(path, content=body, headers=headers)


def provider_settings(database_url, sink, **overrides) -> Settings:
    values = dict(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port,
                  secret_key="web-test-secret", mail_from="Briefings <news@example.org>",
                  public_url="http://testserver/", soft_bounce_limit=3, ses_webhook=True, ses_topic_arns=pt.TOPIC,
                  sendgrid_verification_key=pt.sendgrid_verification_key(), mailgun_signing_key=pt.MAILGUN_KEY,
                  postmark_webhook_auth=":".join(pt.POSTMARK_AUTH))
    return Settings(**{**values, **overrides})


@pytest.fixture
def hooks(database_url, engine, mail_sink, tmp_path):
    settings = provider_settings(database_url, mail_sink)
    seed(engine, READERS)
    runner = Runner(settings, engine, clock=lambda: LATER)
    try:
        assert runner.run_once().by_status["sent"] == len(READERS)
    finally:
        runner.close()
    ids = {}
    for path in sorted((tmp_path / "mail").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        ids[parseaddr(str(message["To"]))[1]] = str(message["Message-ID"])
    assert set(ids) == set(READERS)
    fetcher = pt.LocalFetcher()
    with TestClient(create_app(settings, engine, sns_fetcher=fetcher)) as client:
        yield Hooks(client, engine, ids, fetcher)


def sns_post(hooks, message, **kwargs):
    data = pt.sns_message(message, **kwargs)
    return hooks.post("/webhooks/ses", data, pt.sns_headers(data)), data


# --- Amazon SES through SNS ---------------------------------------------------------

def test_ses_subscription_is_confirmed_once_and_a_bounce_marks_the_reader_bounced(hooks):
    confirm = pt.sns_message("You have chosen to subscribe to the topic.", kind="SubscriptionConfirmation")
    answer = hooks.post("/webhooks/ses", confirm, pt.sns_headers(confirm))
    assert answer.status_code == 200 and answer.json()["confirmed"]
    assert hooks.fetcher.fetched == [pt.CERT_URL, pt.SUBSCRIBE_URL]
    assert hooks.post("/webhooks/ses", confirm, pt.sns_headers(confirm)).json()["replayed"]
    assert hooks.fetcher.fetched.count(pt.SUBSCRIBE_URL) == 1

    answer, data = sns_post(hooks, pt.ses_bounce(hooks.ids["gone@example.net"], "gone@example.net"))
    assert answer.status_code == 200 and answer.json()["recorded"] == 1, answer.text
    status, reason, _ = hooks.status("gone@example.net")
    assert status == SubscriberStatus.bounced and "5.1.1" in reason
    assert hooks.events() == [("ses", "hard_bounce", "5.1.1", True)]
    with db.session_scope(hooks.engine) as session:
        entries = session.exec(select(AuditEntry).where(AuditEntry.actor == "ses webhook")).all()
        assert entries, "the audit log names the webhook that bounced the reader"
    assert hooks.fetcher.fetched.count(pt.CERT_URL) == 1  # the certificate came from the cache

    replay = hooks.post("/webhooks/ses", data, pt.sns_headers(data))
    assert replay.status_code == 200 and replay.json()["replayed"]
    assert len(hooks.events()) == 1


def test_ses_signature_version_2_transient_bounce_and_complaint(hooks):
    answer, _ = sns_post(hooks, pt.ses_bounce(hooks.ids["full@example.net"], "full@example.net",
                                               bounce_type="Transient", subtype="MailboxFull", status="5.2.2"),
                         version="2")
    assert answer.json()["recorded"] == 1, answer.text
    status, _, score = hooks.status("full@example.net")
    assert status == SubscriberStatus.active and score == pytest.approx(1.0)
    answer, _ = sns_post(hooks, pt.ses_complaint(hooks.ids["angry@example.net"], "angry@example.net"), version="2")
    assert answer.json()["recorded"] == 1
    assert hooks.status("angry@example.net")[:2] == (SubscriberStatus.unsubscribed, "complaint")


def test_ses_forged_stale_foreign_and_badly_hosted_messages_change_nothing(hooks):
    bounce = pt.ses_bounce(hooks.ids["gone@example.net"], "gone@example.net")
    data = pt.sns_message(bounce)
    forged = {**data, "Message": bounce.replace("Permanent", "Transient")}
    assert hooks.post("/webhooks/ses", forged, pt.sns_headers(forged)).status_code == 403
    other_key = pt.sign_sns({k: v for k, v in data.items() if k != "Signature"}, key_name="intruder")
    assert hooks.post("/webhooks/ses", other_key, pt.sns_headers(other_key)).status_code == 403
    stale, _ = sns_post(hooks, bounce, at=datetime.now(timezone.utc) - timedelta(hours=2))
    assert stale.status_code == 403 and "older" in stale.json()["detail"]
    foreign, _ = sns_post(hooks, bounce, topic="arn:aws:sns:eu-west-1:999999999999:someone-elses")
    assert foreign.status_code == 403
    fetched = len(hooks.fetcher.fetched)
    for url in ("http://sns.eu-west-1.amazonaws.com/cert.pem", "https://sns.eu-west-1.amazonaws.com.evil.test/c.pem",
                "https://sns.us-east-1.amazonaws.com/c.pem", "https://evil.test/sns.eu-west-1.amazonaws.com/c.pem",
                "https://user@sns.eu-west-1.amazonaws.com/c.pem"):
        answer, _ = sns_post(hooks, bounce, cert_url=url)
        assert answer.status_code == 403, url
    assert len(hooks.fetcher.fetched) == fetched  # none of those was even fetched
    unknown_version, _ = sns_post(hooks, bounce, version="3")
    assert unknown_version.status_code == 403
    raw = hooks.post("/webhooks/ses", json.loads(bounce), {"content-type": "text/plain"})
    assert raw.status_code == 400  # raw message delivery: unsigned
    assert hooks.events() == [] and hooks.status("gone@example.net")[0] == SubscriberStatus.active


def test_ses_events_that_name_no_delivery_of_ours_are_not_written(hooks):
    # Another reader's Message-ID with this address; no Message-ID at all for a soft bounce; a stranger.
    answer, _ = sns_post(hooks, pt.ses_bounce(hooks.ids["fine@example.net"], "gone@example.net",
                                               status="5.7.1", subtype="General"))
    assert answer.json()["unattributable"] == 1
    answer, _ = sns_post(hooks, pt.ses_bounce(None, "full@example.net", bounce_type="Transient", status="4.4.7"))
    assert answer.json()["unattributable"] == 1
    answer, _ = sns_post(hooks, pt.ses_complaint(None, "angry@example.net"))
    assert answer.json()["unattributable"] == 1
    answer, _ = sns_post(hooks, pt.ses_bounce(None, "stranger@example.net"))
    assert answer.json()["unattributable"] == 1
    assert hooks.events() == []
    # Without the original headers, a mailbox that does not exist is still found by its address.
    answer, _ = sns_post(hooks, pt.ses_bounce(None, "gone@example.net", subtype="NoEmail"))
    assert answer.json()["recorded"] == 1
    assert hooks.events() == [("ses", "hard_bounce", "5.1.1", False)]


# --- SendGrid ----------------------------------------------------------------------

def test_sendgrid_batch_bounce_blocked_spamreport_and_ignored_events(hooks):
    batch = [
        pt.sendgrid_event("processed", "fine@example.net", hooks.ids["fine@example.net"]),
        pt.sendgrid_event("delivered", "fine@example.net", hooks.ids["fine@example.net"], response="250 OK"),
        pt.sendgrid_event("bounce", "gone@example.net", hooks.ids["gone@example.net"], type="bounce",
                          status="5.1.1", reason="550 5.1.1 The email account does not exist",
                          bounce_classification="Invalid Address"),
        pt.sendgrid_event("bounce", "full@example.net", hooks.ids["full@example.net"], type="blocked",
                          status="4.7.1", reason="421 4.7.1 Try again later"),
        pt.sendgrid_event("spamreport", "angry@example.net", hooks.ids["angry@example.net"]),
        pt.sendgrid_event("bounce", "stranger@example.net", "<other-app-1@example.org>", type="bounce",
                          status="5.7.1", reason="550 5.7.1 blocked"),
    ]
    body = json.dumps(batch).encode()
    now = int(time.time())
    answer = hooks.post("/webhooks/sendgrid", body, pt.sendgrid_headers(body, at=now))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"replayed": False, "recorded": 3, "duplicates": 0, "unattributable": 1, "ignored": 2}
    assert hooks.status("gone@example.net")[0] == SubscriberStatus.bounced
    assert hooks.status("full@example.net")[0] == SubscriberStatus.active
    assert hooks.status("full@example.net")[2] == pytest.approx(1.0)
    assert hooks.status("angry@example.net")[:2] == (SubscriberStatus.unsubscribed, "complaint")
    # The same request again changes nothing; the same events re-signed are duplicates.
    assert hooks.post("/webhooks/sendgrid", body, pt.sendgrid_headers(body, at=now)).json()["replayed"]
    again = hooks.post("/webhooks/sendgrid", body, pt.sendgrid_headers(body, at=now - 5))
    assert again.json()["recorded"] == 0 and again.json()["duplicates"] == 3
    assert len(hooks.events()) == 3


def test_sendgrid_forged_stale_unsigned_and_oversized_batches_change_nothing(hooks):
    batch = [pt.sendgrid_event("bounce", "gone@example.net", hooks.ids["gone@example.net"], type="bounce",
                               status="5.1.1", reason="550 5.1.1 unknown user")]
    body = json.dumps(batch).encode()
    headers = pt.sendgrid_headers(body)
    exact = hooks.post("/webhooks/sendgrid", body, headers)
    assert exact.json()["recorded"] == 1
    assert hooks.post("/webhooks/sendgrid", body, headers).json()["replayed"]  # the very same request
    other = [pt.sendgrid_event("spamreport", "angry@example.net", hooks.ids["angry@example.net"])]
    forged_body = json.dumps(other).encode()
    assert hooks.post("/webhooks/sendgrid", forged_body, headers).status_code == 403  # another body, old signature
    assert hooks.post("/webhooks/sendgrid", forged_body,
                      pt.sendgrid_headers(forged_body, name="intruder")).status_code == 403
    assert hooks.post("/webhooks/sendgrid", forged_body, {"content-type": "application/json"}).status_code == 401
    stale = hooks.post("/webhooks/sendgrid", forged_body,
                       pt.sendgrid_headers(forged_body, at=int(time.time()) - 25 * 3600))
    assert stale.status_code == 403
    many = json.dumps([other[0]] * 3001).encode()
    assert hooks.post("/webhooks/sendgrid", many, pt.sendgrid_headers(many)).status_code == 413
    huge = b"[" + b" " * (1024 * 1024) + b"]"
    assert hooks.post("/webhooks/sendgrid", huge, pt.sendgrid_headers(huge)).status_code == 413
    assert hooks.status("angry@example.net")[0] == SubscriberStatus.active
    assert len(hooks.events()) == 1


# --- Mailgun -----------------------------------------------------------------------

def test_mailgun_permanent_temporary_and_complained(hooks):
    gone = hooks.post("/webhooks/mailgun", pt.mailgun_body(pt.mailgun_failed(
        "gone@example.net", hooks.ids["gone@example.net"])), {})
    assert gone.json()["recorded"] == 1, gone.text
    assert hooks.status("gone@example.net")[0] == SubscriberStatus.bounced
    full = hooks.post("/webhooks/mailgun", pt.mailgun_body(pt.mailgun_failed(
        "full@example.net", hooks.ids["full@example.net"], severity="temporary", code=452,
        message="4.2.2 The email account that you tried to reach is over quota")), {})
    assert full.json()["recorded"] == 1
    assert hooks.status("full@example.net")[0] == SubscriberStatus.active
    angry = hooks.post("/webhooks/mailgun", pt.mailgun_body(pt.mailgun_complained(
        "angry@example.net", hooks.ids["angry@example.net"])), {})
    assert angry.json()["recorded"] == 1
    assert hooks.status("angry@example.net")[:2] == (SubscriberStatus.unsubscribed, "complaint")
    assert [e[:3] for e in hooks.events()] == [("mailgun", "hard_bounce", "5.1.1"),
                                                ("mailgun", "soft_bounce", "4.2.2"), ("mailgun", "complaint", None)]


def test_mailgun_a_token_is_used_once_and_forged_or_stale_requests_change_nothing(hooks):
    first = pt.mailgun_body(pt.mailgun_failed("full@example.net", hooks.ids["full@example.net"],
                                              severity="temporary", code=421, message="4.4.2 timeout"))
    assert hooks.post("/webhooks/mailgun", first, {}).json()["recorded"] == 1
    # The signature does not cover event-data: the same token with other contents is a replay.
    swapped = {**first, "event-data": pt.mailgun_complained("angry@example.net", hooks.ids["angry@example.net"])}
    assert hooks.post("/webhooks/mailgun", swapped, {}).json()["replayed"]
    wrong_key = pt.mailgun_body(pt.mailgun_complained("angry@example.net", hooks.ids["angry@example.net"]),
                                key="key-not-ours")
    assert hooks.post("/webhooks/mailgun", wrong_key, {}).status_code == 403
    stale = pt.mailgun_body(pt.mailgun_complained("angry@example.net", hooks.ids["angry@example.net"]),
                            at=int(time.time()) - 9 * 3600)
    assert hooks.post("/webhooks/mailgun", stale, {}).status_code == 403
    unsigned = {"event-data": pt.mailgun_complained("angry@example.net", hooks.ids["angry@example.net"])}
    assert hooks.post("/webhooks/mailgun", unsigned, {}).status_code == 401
    assert hooks.post("/webhooks/mailgun", b"[[[[" * 5000, {}).status_code == 400
    assert hooks.status("angry@example.net")[0] == SubscriberStatus.active
    assert len(hooks.events()) == 1


# --- Postmark ----------------------------------------------------------------------

def test_postmark_hard_bounce_by_address_soft_bounce_not_and_complaint_from_its_content(hooks):
    hard = pt.postmark_bounce("gone@example.net", record_id=4242)
    answer = hooks.post("/webhooks/postmark", hard, pt.postmark_headers())
    assert answer.json()["recorded"] == 1, answer.text
    assert hooks.status("gone@example.net")[0] == SubscriberStatus.bounced
    again = hooks.post("/webhooks/postmark", hard, pt.postmark_headers())
    assert again.json()["duplicates"] == 1
    soft = pt.postmark_bounce("full@example.net", kind="SoftBounce", details="452 4.2.2 mailbox full")
    assert hooks.post("/webhooks/postmark", soft, pt.postmark_headers()).json()["unattributable"] == 1
    # With "Include bounce content", the raw report names our Message-ID.
    content = arf_report(hooks.ids["angry@example.net"], "angry@example.net")
    complaint = pt.postmark_complaint("angry@example.net", content=content)
    assert hooks.post("/webhooks/postmark", complaint, pt.postmark_headers()).json()["recorded"] == 1
    assert hooks.status("angry@example.net")[:2] == (SubscriberStatus.unsubscribed, "complaint")
    assert hooks.events() == [("postmark", "hard_bounce", "5.1.1", False), ("postmark", "complaint", None, True)]


def test_postmark_without_the_password_changes_nothing(hooks):
    hard = pt.postmark_bounce("gone@example.net")
    for headers in ({}, pt.postmark_headers(("hooks", "wrong")), {"Authorization": "Basic !!!"},
                    {"Authorization": "Bearer " + pt.POSTMARK_AUTH[1]}):
        answer = hooks.post("/webhooks/postmark", hard, headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic")
    assert hooks.events() == []


def arf_report(message_id: str, to: str) -> str:
    from email.mime.message import MIMEMessage
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.message import Message

    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@isp.example"
    report["To"] = "news@example.org"
    report["Subject"] = "Abuse report"
    report.attach(MIMEText("This is an email abuse report."))
    feedback = Message()
    feedback.set_type("message/feedback-report")
    feedback.set_payload(f"Feedback-Type: abuse\nUser-Agent: ISP-FBL/1.0\nVersion: 1\nOriginal-Rcpt-To: {to}\n")
    report.attach(feedback)
    original = MIMEText("The briefing.")
    original["Message-ID"] = message_id
    original["To"] = to
    original["From"] = "Briefings <news@example.org>"
    report.attach(MIMEMessage(original))
    return report.as_string()


# --- all of them -------------------------------------------------------------------

def test_a_provider_not_configured_answers_404(database_url, engine, mail_sink):
    settings = provider_settings(database_url, mail_sink, ses_webhook=False, ses_topic_arns="",
                                 sendgrid_verification_key=None, mailgun_signing_key=None,
                                 postmark_webhook_auth=None)
    with TestClient(create_app(settings, engine, sns_fetcher=pt.LocalFetcher())) as client:
        for provider in ("ses", "sendgrid", "mailgun", "postmark"):
            answer = client.post(f"/webhooks/{provider}", content=b"{}")
            assert answer.status_code == 404 and "not configured" in answer.json()["detail"]


def test_no_secret_or_signature_reaches_the_log(hooks, caplog):
    caplog.set_level(logging.DEBUG)
    body = pt.mailgun_body(pt.mailgun_failed("gone@example.net", hooks.ids["gone@example.net"]))
    hooks.post("/webhooks/mailgun", body, {})
    hooks.post("/webhooks/mailgun", body, {})
    batch = json.dumps([pt.sendgrid_event("spamreport", "angry@example.net", hooks.ids["angry@example.net"])]).encode()
    sg_headers = pt.sendgrid_headers(batch)
    hooks.post("/webhooks/sendgrid", batch, sg_headers)
    hooks.post("/webhooks/postmark", pt.postmark_bounce("gone@example.net"), pt.postmark_headers(("hooks", "guess")))
    sns, _ = sns_post(hooks, pt.ses_bounce(hooks.ids["full@example.net"], "full@example.net"))
    logged = caplog.text
    assert "webhook source=mailgun outcome=replayed" in logged and "outcome=refused status=401" in logged
    for secret in (body["signature"]["token"], body["signature"]["signature"], pt.MAILGUN_KEY,
                   sg_headers["X-Twilio-Email-Event-Webhook-Signature"], pt.POSTMARK_AUTH[1], "guess"):
        assert secret not in logged
    with db.session_scope(hooks.engine) as session:
        assert len(session.exec(select(WebhookNonce)).all()) == 3  # mailgun, sendgrid, ses
