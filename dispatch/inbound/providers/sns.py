"""An Amazon SNS message posted to an HTTP(S) subscription, verified.

SNS signs the values of a fixed list of keys ("Key\\nValue\\n" for each,
in this order) with RSA: SHA1 for SignatureVersion 1, SHA256 for 2,
against the certificate at SigningCertURL (``sns_certs`` says which URLs
may serve it). The Timestamp is the publish time and SNS retries a
delivery with it unchanged for at most an hour, so a message older than
``MAX_AGE`` is refused as a replay.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dispatch.inbound.providers import sns_certs
from dispatch.inbound.providers.reading import Refused, fresh, load_json

MAX_AGE = timedelta(minutes=65)  # SNS's longest HTTP retry policy (an hour), and some skew
SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_SIGNATURE_CHARS = 2048  # base64 of an RSA-4096 signature is 684


@dataclass(frozen=True)
class Envelope:
    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    subscribe_url: str | None


def verify(body: bytes, headers: Mapping[str, str], *, certificates: Callable[[str], x509.Certificate],
           allowed_topics: tuple[str, ...], now: datetime) -> Envelope:
    data = load_json(body, what="the SNS message")
    if not isinstance(data, dict):
        raise Refused(400, "the SNS message is not a JSON object")
    kind = data.get("Type")
    if kind not in SIGNED_KEYS:
        # Raw message delivery posts the bare message, unsigned: it cannot be verified.
        raise Refused(400, "not an SNS message (Type); turn raw message delivery off for this subscription")
    said = headers.get("x-amz-sns-message-type")
    if said is not None and said != kind:
        raise Refused(400, "x-amz-sns-message-type does not match the message's Type")
    for name in SIGNED_KEYS[kind]:
        if name != "Subject" and not isinstance(data.get(name), str):
            raise Refused(400, f"the SNS message has no {name}")
    if "Subject" in data and not isinstance(data["Subject"], str):
        raise Refused(400, "the SNS message's Subject is not text")
    topic = data["TopicArn"]
    if allowed_topics and topic not in allowed_topics:
        raise Refused(403, "the SNS topic is not one of DISPATCH_SES_TOPIC_ARNS")
    timestamp = _timestamp(data["Timestamp"])
    fresh(timestamp, now=now, max_age=MAX_AGE, what="the SNS message")
    _check_signature(data, kind, certificates=certificates, region=_region(topic))
    subscribe_url = data.get("SubscribeURL") if kind == "SubscriptionConfirmation" else None
    if subscribe_url is not None:
        problem = sns_certs.sns_host_problem(subscribe_url, region=_region(topic))
        if problem:
            raise Refused(403, f"SubscribeURL {problem}")
    return Envelope(kind, data["MessageId"][:200], topic, data["Message"], timestamp, subscribe_url)


def string_to_sign(data: Mapping[str, str], kind: str) -> bytes:
    lines = []
    for name in SIGNED_KEYS[kind]:
        if name in data:
            lines.append(f"{name}\n{data[name]}\n")
    return "".join(lines).encode("utf-8")


def _check_signature(data, kind, *, certificates, region) -> None:
    algorithm = HASHES.get(str(data.get("SignatureVersion")))
    if algorithm is None:
        raise Refused(403, "SignatureVersion must be 1 or 2")
    url, signature = data.get("SigningCertURL"), data.get("Signature")
    if not isinstance(url, str) or not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_CHARS:
        raise Refused(403, "the SNS message is not signed")
    problem = sns_certs.certificate_url_problem(url, region=region)
    if problem:
        raise Refused(403, f"SigningCertURL {problem}")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(403, "the SNS signature is not base64") from None
    try:
        certificate = certificates(url)
    except sns_certs.FetchError as exc:
        raise Refused(503, f"the SNS signing certificate {exc}") from None
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused(403, "the SNS signing certificate has no RSA key")
    try:
        key.verify(raw, string_to_sign(data, kind), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Refused(403, "the SNS signature does not verify") from None


def _region(topic_arn: str) -> str | None:
    parts = topic_arn.split(":")
    region = parts[3] if len(parts) == 6 and parts[:3] in (["arn", "aws", "sns"], ["arn", "aws-cn", "sns"],
                                                            ["arn", "aws-us-gov", "sns"]) else ""
    return region if region and all(ch.isalnum() or ch == "-" for ch in region) and len(region) <= 30 else None


def _timestamp(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value[:40])
    except ValueError:
        raise Refused(400, "the SNS message's Timestamp is not a time") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
