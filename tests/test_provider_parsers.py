"""The provider webhook parsers on their own (dispatch.inbound.providers):
no database, no network. Each provider's classification, the SNS
certificate rules and cache, the HTTPS fetcher against a local TLS server,
the settings, and any input at all answered with a verdict, never a crash."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import trustme
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from pydantic import ValidationError

from dispatch.config import Settings
from dispatch.inbound.outcomes import Kind
from dispatch.inbound.providers import mailgun, postmark, reading, sendgrid, ses, sns, sns_certs
from dispatch.inbound.providers.reading import Refused

from . import providertools as pt

MID = "<delivery-7.abcdefghijklmnop@example.org>"


def now():
    return datetime.now(timezone.utc)


# --- classification ------------------------------------------------------------------

@pytest.mark.parametrize(("bounce_type", "subtype", "status", "kind", "invalid"), [
    ("Permanent", "General", "5.1.1", Kind.hard_bounce, True),
    ("Permanent", "NoEmail", "5.0.0", Kind.hard_bounce, True),
    ("Permanent", "Suppressed", "5.7.1", Kind.hard_bounce, False),
    ("Permanent", "General", "5.2.2", Kind.soft_bounce, False),  # a full mailbox is never hard
    ("Transient", "MailboxFull", "5.2.2", Kind.soft_bounce, False),
    ("Transient", "General", "4.4.7", Kind.soft_bounce, False),
    ("Undetermined", "Undetermined", "5.1.1", Kind.hard_bounce, True),
    ("Undetermined", "Undetermined", "", Kind.soft_bounce, False),
])
def test_ses_bounce_types(bounce_type, subtype, status, kind, invalid):
    message = pt.ses_bounce(MID, "Reader@Example.net", bounce_type=bounce_type, subtype=subtype, status=status,
                            diagnostic="smtp; 550 no" if not status else None)
    (event,), ignored = ses.notification_events(message, sns_message_id="m1")
    assert (event.kind, event.address_invalid, event.recipient, event.message_id) == \
        (kind, invalid, "reader@example.net", MID)
    assert ignored == 0


def test_ses_complaints_deliveries_and_event_publishing():
    (event,), _ = ses.notification_events(pt.ses_complaint(MID, "r@example.net"), sns_message_id="m")
    assert event.kind == Kind.complaint and "abuse" in event.diagnostic
    delivery = json.dumps({"notificationType": "Delivery", "mail": pt.ses_mail(MID, "r@example.net"),
                           "delivery": {"recipients": ["r@example.net"]}})
    assert ses.notification_events(delivery, sns_message_id="m") == ([], 1)
    published = json.loads(pt.ses_bounce(None, "r@example.net"))
    published["eventType"] = published.pop("notificationType")
    (event,), _ = ses.notification_events(json.dumps(published), sns_message_id="m")
    assert event.kind == Kind.hard_bounce and event.message_id is None


@pytest.mark.parametrize(("event", "extra", "kind"), [
    ("bounce", {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 unknown"}, Kind.hard_bounce),
    ("bounce", {"type": "bounce", "status": "5.2.2", "reason": "552 5.2.2 full"}, Kind.soft_bounce),
    ("bounce", {"type": "blocked", "status": "5.7.1", "reason": "550 5.7.1 spam"}, Kind.soft_bounce),
    ("bounce", {"status": "4.0.0", "reason": "421 later"}, Kind.soft_bounce),
    ("dropped", {"reason": "Bounced Address"}, Kind.hard_bounce),
    ("dropped", {"reason": "Invalid"}, Kind.hard_bounce),
    ("dropped", {"reason": "Spam Reporting Address"}, Kind.complaint),
    ("dropped", {"reason": "Expired"}, Kind.soft_bounce),
    ("dropped", {"reason": "Unsubscribed Address"}, None),
    ("spamreport", {}, Kind.complaint),
    ("deferred", {"response": "400 try again later", "attempt": "5"}, None),
    ("delivered", {"response": "250 OK"}, None),
    ("open", {}, None),
])
def test_sendgrid_events(event, extra, kind):
    body = json.dumps([pt.sendgrid_event(event, "r@example.net", MID, **extra)]).encode()
    verified = sendgrid.read(body, lower(pt.sendgrid_headers(body)), public_key=key(), now=now())
    assert [e.kind for e in verified.events] == ([kind] if kind else [])
    assert verified.ignored == (0 if kind else 1)


@pytest.mark.parametrize(("data", "kind", "status", "invalid"), [
    (pt.mailgun_failed("r@example.net", MID), Kind.hard_bounce, "5.1.1", True),
    (pt.mailgun_failed("r@example.net", MID, message="no such user", code=550), Kind.hard_bounce, "5.0.0", False),
    (pt.mailgun_failed("r@example.net", MID, severity="temporary", code=421, message="4.4.2 timeout"),
     Kind.soft_bounce, "4.4.2", False),
    (pt.mailgun_failed("r@example.net", MID, message="552 5.2.2 over quota"), Kind.soft_bounce, "5.2.2", False),
    (pt.mailgun_failed("r@example.net", MID, reason="suppress-bounce", code=605, message="Not delivering to "
                       "previously bounced address"), Kind.hard_bounce, None, True),
    (pt.mailgun_failed("r@example.net", MID, reason="suppress-complaint", code=607, message="Not delivering to a "
                       "user who marked your messages as spam"), Kind.complaint, None, False),
    (pt.mailgun_complained("r@example.net", MID), Kind.complaint, None, False),
])
def test_mailgun_events(data, kind, status, invalid):
    verified = mailgun.read(json.dumps(pt.mailgun_body(data)).encode(), {}, signing_key=pt.MAILGUN_KEY, now=now())
    (event,) = verified.events
    assert (event.kind, event.status, event.address_invalid, event.message_id) == (kind, status, invalid, MID)


def test_a_retry_that_keeps_its_first_signature_is_accepted_within_the_retry_span():
    hours_ago = int(time.time()) - 2 * 3600
    verified = mailgun.read(json.dumps(pt.mailgun_body(pt.mailgun_complained("r@example.net", MID),
                                                       at=hours_ago)).encode(),
                            {}, signing_key=pt.MAILGUN_KEY, now=now())
    assert verified.expires_at == datetime.fromtimestamp(hours_ago, timezone.utc) + mailgun.MAX_AGE
    body = json.dumps([pt.sendgrid_event("spamreport", "r@example.net", MID)]).encode()
    verified = sendgrid.read(body, lower(pt.sendgrid_headers(body, at=int(time.time()) - 20 * 3600)),
                             public_key=key(), now=now())
    assert len(verified.events) == 1
    future = int(time.time()) + 3600
    with pytest.raises(Refused, match="future"):
        sendgrid.read(body, lower(pt.sendgrid_headers(body, at=future)), public_key=key(), now=now())


def test_mailgun_ignores_deliveries_and_opens():
    delivered = {**pt.mailgun_complained("r@example.net", MID), "event": "delivered"}
    verified = mailgun.read(json.dumps(pt.mailgun_body(delivered)).encode(), {}, signing_key=pt.MAILGUN_KEY,
                            now=now())
    assert verified.events == () and verified.ignored == 1 and verified.nonce.startswith("token:")


@pytest.mark.parametrize(("kind", "expected", "invalid"), [
    ("HardBounce", Kind.hard_bounce, True), ("BadEmailAddress", Kind.hard_bounce, True),
    ("SoftBounce", Kind.soft_bounce, False), ("Transient", Kind.soft_bounce, False),
    ("DnsError", Kind.soft_bounce, False), ("SpamComplaint", Kind.complaint, False),
    ("AutoResponder", None, False), ("OpenRelayTest", None, False), ("ManuallyDeactivated", None, False),
])
def test_postmark_types(kind, expected, invalid):
    verified = postmark.read(json.dumps(pt.postmark_bounce("r@example.net", kind=kind)).encode(),
                             lower(pt.postmark_headers()), expected_auth=":".join(pt.POSTMARK_AUTH))
    assert [(e.kind, e.address_invalid) for e in verified.events] == ([(expected, invalid)] if expected else [])


def test_postmark_a_full_mailbox_is_soft_even_in_a_hard_bounce():
    data = pt.postmark_bounce("r@example.net", details="smtp;552 5.2.2 mailbox full")
    (event,) = postmark.read(json.dumps(data).encode(), lower(pt.postmark_headers()),
                             expected_auth=":".join(pt.POSTMARK_AUTH)).events
    assert (event.kind, event.status, event.address_invalid) == (Kind.soft_bounce, "5.2.2", False)


def test_mailgun_signature_blocks_that_are_not_hex_are_refused():
    body = pt.mailgun_body(pt.mailgun_complained("r@example.net", MID))
    for given in ("é" * 64, "g" * 64, "0" * 63, ["not", "text"]):
        block = {**body["signature"], "signature": given}
        with pytest.raises(Refused) as refused:
            mailgun.read(json.dumps({**body, "signature": block}).encode(), {}, signing_key=pt.MAILGUN_KEY,
                         now=now())
        assert refused.value.status == 403


def test_postmark_delivery_and_open_records_are_ignored():
    for record in ("Delivery", "Open", "Click", "SubscriptionChange"):
        verified = postmark.read(json.dumps({"RecordType": record, "MessageID": "x"}).encode(),
                                 lower(pt.postmark_headers()), expected_auth=":".join(pt.POSTMARK_AUTH))
        assert verified.events == () and verified.ignored == 1


# --- SNS -----------------------------------------------------------------------------

def test_sns_certificate_urls():
    good = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
    assert sns_certs.certificate_url_problem(good, region="eu-west-1") is None
    assert sns_certs.certificate_url_problem(good.replace(".com/", ".com.cn/"), region="eu-west-1") is None
    for bad in (good.replace("https", "http"), good.replace("eu-west-1", "us-east-1"),
                good.replace(".pem", ".pem?x=1"), good.replace(".pem", ".txt"),
                "https://sns.eu-west-1.amazonaws.com:8443/x.pem", "https://sns.eu-west-1.amazonaws.com.evil/x.pem",
                "https://a@sns.eu-west-1.amazonaws.com/x.pem", "https://[::1/x.pem"):
        assert sns_certs.certificate_url_problem(bad, region="eu-west-1") is not None, bad
    assert sns_certs.certificate_url_problem(good, region=None) is not None


def test_the_signed_string_is_the_documented_one():
    data = {"Type": "Notification", "MessageId": "id", "TopicArn": "t", "Message": "m\nx", "Timestamp": "ts",
            "Subject": "s", "UnsubscribeURL": "u", "SignatureVersion": "1"}
    assert sns.string_to_sign(data, "Notification") == b"Message\nm\nx\nMessageId\nid\nSubject\ns\nTimestamp\nts\n" \
        b"TopicArn\nt\nType\nNotification\n"
    del data["Subject"]  # an absent Subject is left out, not signed empty
    assert b"Subject" not in sns.string_to_sign(data, "Notification")


def test_a_subject_is_signed_too():
    certificates = sns_certs.Certificates(pt.LocalFetcher())
    data = pt.sns_message(pt.ses_bounce(MID, "r@example.net"), subject="Amazon SES Email Event Notification")
    ses.read(json.dumps(data).encode(), {}, certificates=certificates, allowed_topics=(), now=now())
    changed = {**data, "Subject": "something else"}
    with pytest.raises(Refused) as refused:
        ses.read(json.dumps(changed).encode(), {}, certificates=certificates, allowed_topics=(), now=now())
    assert refused.value.status == 403


def test_certificates_are_cached_bounded_and_checked():
    pages = {f"https://sns.eu-west-1.amazonaws.com/c{i}.pem": pt.sns_certificate_pem() for i in range(20)}
    pages["https://sns.eu-west-1.amazonaws.com/big.pem"] = b"x" * (sns_certs.MAX_CERT_BYTES + 10)
    pages["https://sns.eu-west-1.amazonaws.com/junk.pem"] = b"-----BEGIN CERTIFICATE-----\nnope\n"
    fetcher = pt.LocalFetcher(pages)
    certificates = sns_certs.Certificates(fetcher)
    first = "https://sns.eu-west-1.amazonaws.com/c0.pem"
    assert certificates(first) is certificates(first)
    assert fetcher.fetched == [first]
    for i in range(20):
        certificates(f"https://sns.eu-west-1.amazonaws.com/c{i}.pem")
    assert len(certificates) == sns_certs.CACHE_SIZE
    for url in ("https://sns.eu-west-1.amazonaws.com/big.pem", "https://sns.eu-west-1.amazonaws.com/junk.pem",
                "https://sns.eu-west-1.amazonaws.com/missing.pem"):
        with pytest.raises(sns_certs.FetchError):
            certificates(url)
    # A URL that failed is not fetched again for a while.
    missing = "https://sns.eu-west-1.amazonaws.com/missing.pem"
    with pytest.raises(sns_certs.FetchError, match="not tried again"):
        certificates(missing)
    assert fetcher.fetched.count(missing) == 1
    later = sns_certs.Certificates(fetcher, clock=lambda: now() + timedelta(days=90))
    with pytest.raises(sns_certs.FetchError, match="not valid now"):
        later(first)


def test_a_certificate_that_cannot_be_fetched_asks_sns_to_retry():
    data = pt.sns_message(pt.ses_bounce(MID, "r@example.net"))
    fetcher = pt.LocalFetcher()
    fetcher.pages.clear()
    with pytest.raises(Refused) as refused:
        ses.read(json.dumps(data).encode(), {}, certificates=sns_certs.Certificates(fetcher), allowed_topics=(),
                 now=now())
    assert refused.value.status == 503


@pytest.fixture
def tls_server(tmp_path):
    """A local HTTPS server with a certificate from a CA made here: what the real fetcher talks to."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pem = pt.sns_certificate_pem()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/redirect.pem":
                self.send_response(302)
                self.send_header("Location", "https://evil.test/cert.pem")
                self.end_headers()
                return
            body = pem if self.path == "/cert.pem" else b"x" * (sns_certs.MAX_CERT_BYTES * 2)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    yield f"https://127.0.0.1:{server.server_address[1]}", client, pem
    server.shutdown()
    server.server_close()


def test_the_https_fetcher_checks_tls_follows_no_redirect_and_bounds_the_size(tls_server):
    base, trusting, pem = tls_server
    fetcher = sns_certs.HttpsFetcher(context=trusting, allowed=("127.0.0.1/32",))  # the test server's loopback
    assert fetcher(f"{base}/cert.pem", max_bytes=sns_certs.MAX_CERT_BYTES) == pem
    with pytest.raises(sns_certs.FetchError, match="302"):
        fetcher(f"{base}/redirect.pem", max_bytes=sns_certs.MAX_CERT_BYTES)
    with pytest.raises(sns_certs.FetchError, match="larger"):
        fetcher(f"{base}/big.pem", max_bytes=sns_certs.MAX_CERT_BYTES)
    with pytest.raises(sns_certs.FetchError):  # the system's CAs do not know the one made here
        sns_certs.HttpsFetcher(allowed=("127.0.0.1/32",))(f"{base}/cert.pem", max_bytes=sns_certs.MAX_CERT_BYTES)
    with pytest.raises(sns_certs.FetchError, match="public address"):  # loopback, unless listed
        sns_certs.HttpsFetcher(context=trusting)(f"{base}/cert.pem", max_bytes=sns_certs.MAX_CERT_BYTES)


# --- settings --------------------------------------------------------------------------

def test_provider_settings_are_checked_and_shown_without_secrets():
    settings = Settings(ses_webhook=True, ses_topic_arns=f"{pt.TOPIC}, arn:aws:sns:us-east-1:123456789012:other",
                        sendgrid_verification_key=pt.sendgrid_verification_key(),
                        mailgun_signing_key=pt.MAILGUN_KEY, postmark_webhook_auth=":".join(pt.POSTMARK_AUTH))
    assert settings.ses_topic_arns == (pt.TOPIC, "arn:aws:sns:us-east-1:123456789012:other")
    shown = json.dumps(settings.masked())
    assert pt.MAILGUN_KEY not in shown and pt.POSTMARK_AUTH[1] not in shown
    assert settings.masked()["mailgun_signing_key"] == "********"
    assert settings.warnings() == []
    with pytest.raises(ValidationError, match="DISPATCH_SES_TOPIC_ARNS"):  # any AWS account could post bounces
        Settings(ses_webhook=True)
    for bad in (dict(ses_topic_arns="arn:aws:sqs:us-east-1:123456789012:q"), dict(ses_topic_arns="topic"),
                dict(sendgrid_verification_key="not a key"),
                dict(sendgrid_verification_key=base64.b64encode(b"\x30\x03\x02\x01\x00").decode()),
                dict(postmark_webhook_auth="just-a-password"), dict(postmark_webhook_auth="user:")):
        with pytest.raises(ValidationError) as refused:
            Settings(**bad)
        assert "just-a-password" not in str(refused.value)


def test_dispatch_config_names_the_webhook_settings(run, monkeypatch):
    monkeypatch.setenv("DISPATCH_MAILGUN_SIGNING_KEY", pt.MAILGUN_KEY)
    result = run("config", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["mailgun_signing_key"] == "********" and pt.MAILGUN_KEY not in result.output
    monkeypatch.setenv("DISPATCH_SES_WEBHOOK", "true")
    refused = run("config", "--json")
    assert refused.exit_code != 0 and "DISPATCH_SES_TOPIC_ARNS" in refused.output


# --- any input ----------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)
event_shaped = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from(["bounce", "dropped", "spamreport", "failed", "complained"]) | st.text(),
    "email": st.text() | st.integers(), "smtp-id": st.text() | json_values, "status": st.text() | json_values,
    "reason": st.text() | json_values, "type": st.text() | json_values, "severity": json_values,
    "recipient": json_values, "delivery-status": json_values, "message": json_values, "id": json_values,
    "timestamp": json_values, "sg_event_id": json_values})

FAST = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_gets_a_verdict(body):
    for read in (lambda: sendgrid.read(body, lower(pt.sendgrid_headers(body)), public_key=key(), now=now()),
                 lambda: mailgun.read(body, {}, signing_key=pt.MAILGUN_KEY, now=now()),
                 lambda: postmark.read(body, lower(pt.postmark_headers()), expected_auth=":".join(pt.POSTMARK_AUTH)),
                 lambda: ses.notification_events(body.decode("utf-8", "replace"), sns_message_id="m"),
                 lambda: ses.read(body, {}, certificates=sns_certs.Certificates(pt.LocalFetcher()),
                                  allowed_topics=(), now=now())):
        try:
            read()
        except Refused as refused:
            assert refused.status in (400, 401, 403, 413, 503)


@FAST
@given(st.lists(event_shaped, max_size=5))
def test_any_signed_event_fields_get_a_verdict(items):
    body = json.dumps(items).encode()
    sendgrid.read(body, lower(pt.sendgrid_headers(body)), public_key=key(), now=now())
    for item in items:
        verified = mailgun.read(json.dumps(pt.mailgun_body(item)).encode(), {}, signing_key=pt.MAILGUN_KEY,
                                now=now())
        for event in verified.events:
            assert len(event.event_key) <= reading.MAX_KEY and len(event.diagnostic) <= reading.MAX_DIAGNOSTIC


@FAST
@given(json_values)
def test_any_ses_notification_gets_a_verdict(value):
    shaped = {"notificationType": "Bounce", "bounce": value, "mail": value} if not isinstance(value, dict) else \
        {"notificationType": "Bounce", **value}
    try:
        ses.notification_events(json.dumps(shaped), sns_message_id="m")
    except Refused as refused:
        assert refused.status in (400, 413)


def test_deep_nesting_is_refused_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000
    for read in (lambda: mailgun.read(deep, {}, signing_key="k", now=now()),
                 lambda: sendgrid.read(deep, lower(pt.sendgrid_headers(deep)), public_key=key(), now=now())):
        with pytest.raises(Refused) as refused:
            read()
        assert refused.value.status == 400


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def key():
    return sendgrid.load_key(pt.sendgrid_verification_key())


# --- linear time (the harness of tests/test_linear_time.py) ------------------------------

def _sendgrid_reason(value: str):
    body = json.dumps([pt.sendgrid_event("bounce", value, value, type="bounce", reason=value, status=value)]).encode()
    return sendgrid.read(body, lower(pt.sendgrid_headers(body)), public_key=KEY, now=now())


def _mailgun_message(value: str):
    data = pt.mailgun_failed(value, value, message=value)
    data["delivery-status"]["description"] = value
    return mailgun.read(json.dumps(pt.mailgun_body(data)).encode(), {}, signing_key=pt.MAILGUN_KEY, now=now())


def _postmark_details(value: str):
    data = pt.postmark_bounce(value, details=value, content=value)
    return postmark.read(json.dumps(data).encode(), lower(pt.postmark_headers()),
                         expected_auth=":".join(pt.POSTMARK_AUTH))


def _ses_diagnostic(value: str):
    return ses.notification_events(pt.ses_bounce(value, value, status=value, diagnostic=value), sns_message_id="m")


LINEAR_TARGETS = {"sendgrid": _sendgrid_reason, "mailgun": _mailgun_message, "postmark": _postmark_details,
                  "ses": _ses_diagnostic}
KEY = sendgrid.load_key(pt.sendgrid_verification_key())


@pytest.mark.parametrize("target", LINEAR_TARGETS)
def test_the_provider_parsers_are_linear_on_any_field(target):
    from tests.test_linear_time import KNOWN, assert_linear, linear_settings, shapes

    @linear_settings
    @given(shape=st.sampled_from(KNOWN) | shapes)
    def check(shape):
        assert_linear(LINEAR_TARGETS[target], shape, n=10_000, floor=0.05)

    check()
