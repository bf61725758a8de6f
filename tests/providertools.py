"""Signing as the mail providers sign, with keys made here: an SNS signing
certificate (self-signed RSA, served by a local fetcher), SendGrid's
ECDSA P-256 key, Mailgun's HMAC key, Postmark's basic auth; and payloads
shaped as each provider documents them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from dispatch.inbound.providers import sns_certs

REGION = "eu-west-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:ses-bounces"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem"
SUBSCRIBE_URL = (f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}"
                 "&Token=2336412f37fb687f5d51e6e2425c464de")
MAILGUN_KEY = "key-" + "3ax6xnjp29jd6fds4gc373sgvjxteol0"
POSTMARK_AUTH = ("hooks", "postmark-webhook-password-1")


# --- Amazon SNS ----------------------------------------------------------------

@lru_cache(maxsize=2)
def sns_key(name: str = "sns") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sns_certificate_pem(name: str = "sns", *, days: int = 30) -> bytes:
    key = sns_key(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


class LocalFetcher:
    """The pluggable SNS fetcher: serves the certificates made here, and
    answers SubscribeURLs as SNS does; remembers what it was asked for."""

    def __init__(self, pages: dict[str, bytes] | None = None):
        self.pages = {CERT_URL: sns_certificate_pem(), **(pages or {})}
        self.fetched: list[str] = []

    def __call__(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        self.fetched.append(url)
        if url.startswith("https://sns.") and "Action=ConfirmSubscription" in url:
            return b"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult/></ConfirmSubscriptionResponse>"
        if url not in self.pages:
            raise sns_certs.FetchError("answered HTTP 404")
        return self.pages[url][: max_bytes + 1]


# The keys SNS signs, in order (the AWS developer guide, "Verifying the signatures of Amazon SNS messages").
_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def sns_message(message: str, *, kind: str = "Notification", version: str = "1", topic: str = TOPIC,
                at: datetime | None = None, cert_url: str = CERT_URL, key_name: str = "sns",
                message_id: str | None = None, subject: str | None = None) -> dict:
    at = at or datetime.now(timezone.utc)
    data = {"Type": kind, "MessageId": message_id or secrets.token_hex(16), "TopicArn": topic, "Message": message,
            "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "SignatureVersion": version, "SigningCertURL": cert_url}
    if subject is not None:
        data["Subject"] = subject
    if kind == "Notification":
        data["UnsubscribeURL"] = f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:1"
    else:
        data["SubscribeURL"] = SUBSCRIBE_URL
        data["Token"] = "2336412f37fb687f5d51e6e2425c464de"
    return sign_sns(data, version=version, key_name=key_name)


def sign_sns(data: dict, *, version: str = "1", key_name: str = "sns") -> dict:
    names = _NOTIFICATION if data["Type"] == "Notification" else _CONFIRMATION
    canonical = "".join(f"{n}\n{data[n]}\n" for n in names if n in data).encode()
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = sns_key(key_name).sign(canonical, padding.PKCS1v15(), digest)
    return {**data, "Signature": base64.b64encode(signature).decode()}


def sns_headers(data: dict) -> dict:
    return {"x-amz-sns-message-type": data["Type"], "x-amz-sns-message-id": data["MessageId"],
            "x-amz-sns-topic-arn": data["TopicArn"], "content-type": "text/plain; charset=UTF-8"}


def ses_mail(message_id: str | None, to: str) -> dict:
    mail = {"timestamp": "2026-12-03T10:00:00.000Z", "source": "news@example.org",
            "sourceArn": f"arn:aws:ses:{REGION}:123456789012:identity/example.org", "sourceIp": "127.0.3.0",
            "sendingAccountId": "123456789012",
            "messageId": "0102018c2e5f7a3b-8d1c2f4e-5a6b-4c7d-9e8f-0a1b2c3d4e5f-000000", "destination": [to]}
    if message_id is not None:
        mail.update(headersTruncated=False, headers=[
            {"name": "From", "value": "Briefings <news@example.org>"}, {"name": "To", "value": to},
            {"name": "Message-ID", "value": message_id}, {"name": "Subject", "value": "Daily briefing"}],
            commonHeaders={"from": ["Briefings <news@example.org>"], "to": [to], "messageId": message_id,
                           "subject": "Daily briefing"})
    return mail


def ses_bounce(message_id: str | None, to: str, *, bounce_type: str = "Permanent", subtype: str = "General",
               status: str = "5.1.1", diagnostic: str | None = None) -> str:
    return json.dumps({"notificationType": "Bounce", "bounce": {
        "bounceType": bounce_type, "bounceSubType": subtype, "reportingMTA": "dsn; a1-2.smtp-out.amazonses.com",
        "bouncedRecipients": [{"emailAddress": to, "status": status, "action": "failed",
                               "diagnosticCode": diagnostic or f"smtp; 550 {status} <{to}>... User unknown"}],
        "timestamp": "2026-12-03T10:00:02.000Z", "remoteMtaIp": "127.0.2.0",
        "feedbackId": f"0102018c2e5f7b00-{secrets.token_hex(4)}-000000"}, "mail": ses_mail(message_id, to)})


def ses_complaint(message_id: str | None, to: str) -> str:
    return json.dumps({"notificationType": "Complaint", "complaint": {
        "userAgent": "ExampleCorp Feedback Loop (V0.01)", "complainedRecipients": [{"emailAddress": to}],
        "complaintFeedbackType": "abuse", "arrivalDate": "2026-12-03T10:05:00.000Z",
        "timestamp": "2026-12-03T10:05:01.000Z", "feedbackId": f"0102018c-{secrets.token_hex(4)}-000000"},
        "mail": ses_mail(message_id, to)})


# --- SendGrid -------------------------------------------------------------------

@lru_cache(maxsize=2)
def sendgrid_key(name: str = "sendgrid") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_verification_key(name: str = "sendgrid") -> str:
    """The public key as SendGrid's settings page shows it: base64 of the DER."""
    der = sendgrid_key(name).public_key().public_bytes(serialization.Encoding.DER,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sendgrid_headers(body: bytes, *, at: int | None = None, name: str = "sendgrid") -> dict:
    stamp = str(at if at is not None else int(time.time()))
    signature = sendgrid_key(name).sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "content-type": "application/json"}


def sendgrid_event(event: str, to: str, smtp_id: str | None, **extra) -> dict:
    found = {"email": to, "timestamp": int(time.time()), "event": event, "category": ["briefing"],
             "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
             "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", **extra}
    if smtp_id is not None:
        found["smtp-id"] = smtp_id
    return found


# --- Mailgun --------------------------------------------------------------------

def mailgun_body(event_data: dict, *, at: int | None = None, key: str = MAILGUN_KEY, token: str | None = None) -> dict:
    stamp = str(at if at is not None else int(time.time()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event_data}


def mailgun_failed(to: str, message_id: str | None, *, severity: str = "permanent", code: int = 550,
                   message: str = "5.1.1 The email account that you tried to reach does not exist",
                   reason: str = "bounce") -> dict:
    return {"id": secrets.token_urlsafe(16), "timestamp": time.time(), "log-level": "error", "event": "failed",
            "severity": severity, "reason": reason, "recipient": to, "recipient-domain": to.rpartition("@")[2],
            "delivery-status": {"attempt-no": 1, "code": code, "message": message, "description": "",
                                "mx-host": "mx.example.net"},
            "message": {"headers": _mailgun_headers(to, message_id), "attachments": [], "size": 4096},
            "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False}}


def mailgun_complained(to: str, message_id: str | None) -> dict:
    return {"id": secrets.token_urlsafe(16), "timestamp": time.time(), "log-level": "warn", "event": "complained",
            "recipient": to, "message": {"headers": _mailgun_headers(to, message_id), "attachments": [],
                                         "size": 4096}}


def _mailgun_headers(to: str, message_id: str | None) -> dict:
    headers = {"to": to, "from": "Briefings <news@example.org>", "subject": "Daily briefing"}
    if message_id is not None:
        headers["message-id"] = message_id.strip("<>")  # Mailgun drops the angle brackets
    return headers


# --- Postmark -------------------------------------------------------------------

def postmark_headers(auth: tuple[str, str] = POSTMARK_AUTH) -> dict:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}", "content-type": "application/json"}


def postmark_bounce(to: str, *, kind: str = "HardBounce", details: str = "smtp;550 5.1.1 The email account "
                    "that you tried to reach does not exist", record_id: int | None = None,
                    content: str | None = None) -> dict:
    found = {"RecordType": "Bounce", "MessageStream": "outbound", "ID": record_id or secrets.randbelow(10**9),
             "Type": kind, "TypeCode": {"HardBounce": 1, "SoftBounce": 4096, "Transient": 2}.get(kind, 1),
             "Name": "Hard bounce", "Tag": "briefing", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
             "Metadata": {}, "ServerID": 23, "Description": "The server was unable to deliver your message "
             "(ex: unknown user, mailbox not found).", "Details": details, "Email": to,
             "From": "news@example.org", "BouncedAt": "2026-12-03T10:00:00Z", "DumpAvailable": True,
             "Inactive": True, "CanActivate": True, "Subject": "Daily briefing"}
    if content is not None:
        found["Content"] = content
    return found


def postmark_complaint(to: str, *, record_id: int | None = None, content: str | None = None) -> dict:
    found = postmark_bounce(to, kind="SpamComplaint", details="", record_id=record_id, content=content)
    found.update(RecordType="SpamComplaint", TypeCode=512, Name="Spam complaint")
    return found
