"""One inbound message → a reply code, and at most one stored event.

Which delivery or reader a message is about, in order of trust:
1. the VERP token in the address it came to (``links.verp_token``, signed);
2. a VERP token in the returned message's Return-Path, or in an ARF
   report's Original-Mail-From (signed too);
3. the returned message's Message-ID (``mime.message_id``) when it carries
   this installation's part *and* the report names that delivery's reader:
   Message-IDs are not secret, so the address must agree;
4. for mail to the unsubscribe address, the signed unsubscribe token in its
   subject or text (RFC 2369 mailto, as ``mime.build_message`` writes it).

Anything else is refused with a 5xx and nothing is written. Every message
is logged in one line, through the redacting log (no token in full).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.engine import Engine

from dispatch import db, links, mime
from dispatch.inbound import arf, dsn, events, mailparts, outcomes
from dispatch.inbound.outcomes import Kind
from dispatch.models import Delivery, Subscriber

log = logging.getLogger("dispatch.inbound")

# An unsubscribe link or a bare signed token (links.make_token); bounded input, linear.
UNSUBSCRIBE_LINK = re.compile(r"/unsubscribe/([A-Za-z0-9_.-]{10,200})")
SIGNED_TOKEN = re.compile(r"(?<![\w.-])(\d{1,19}-[0-9a-f]{10}\.[\w-]{1,16}\.[\w-]{10,100})")


@dataclass(frozen=True)
class Reply:
    code: int
    text: str  # enhanced status and words, without the code

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


OK = Reply(250, "2.0.0 OK")
NO_MAILBOX = Reply(550, "5.1.1 no such mailbox here")
BAD_TOKEN = Reply(550, "5.7.1 the return path's token is not valid")
UNATTRIBUTED = Reply(550, "5.6.0 this report names no delivery or reader of ours")
UNREADABLE = Reply(554, "5.6.0 not a readable message")
TOO_LARGE = Reply(552, "5.3.4 message too large")
TRY_LATER = Reply(451, "4.3.0 cannot record this now; try again later")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Inbox:
    def __init__(self, engine: Engine, *, secret: str, installation: str, bounce_address: str,
                 unsubscribe_address: str, soft_limit: float, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.secret = secret
        self.installation = installation
        self.bounce_address = bounce_address.lower()
        self.unsubscribe_address = unsubscribe_address.lower()
        self.soft_limit = soft_limit
        self.clock = clock

    # --- the envelope --------------------------------------------------------

    def check_recipient(self, recipient: str) -> Reply | None:
        """At RCPT: None to accept, else the refusal."""
        role, token = self._role(recipient)
        if role is None:
            return NO_MAILBOX
        if token:
            try:
                links.read_verp_token(self.secret, token)
            except links.TokenError:
                log.info("inbound refused to=%s reason=bad return path token", recipient[:320])
                return BAD_TOKEN
        return None

    def _role(self, recipient: str) -> tuple[str | None, str | None]:
        address = mailparts.bare_address(recipient) or recipient.strip().lower()
        token = links.verp_part(self.bounce_address, address)
        if token is not None:
            return "bounce", token
        if address == self.unsubscribe_address:
            return "unsubscribe", None
        return None, None

    # --- the message ---------------------------------------------------------

    def deliver(self, data: bytes, *, recipient: str, source: str, null_sender: bool = False) -> Reply:
        return self.deliver_all(data, recipients=[recipient], source=source, null_sender=null_sender)[0]

    def deliver_all(self, data: bytes, *, recipients: list[str], source: str,
                    null_sender: bool = False) -> list[Reply]:
        """One reply per recipient, in their order (LMTP answers each). The
        message is parsed once, with its bounds, before any recipient's work."""
        try:
            message = mailparts.parse(data)
        except mailparts.MailError as exc:
            too_large = isinstance(exc, mailparts.MailTooLarge)
            for recipient in recipients:
                self._log(source, recipient, "refused", "too large" if too_large else "unreadable (too many parts)")
            return [TOO_LARGE if too_large else UNREADABLE for _ in recipients]
        key = _event_key(message, data)
        return [self._deliver(message, key, recipient=r, source=source, null_sender=null_sender)
                for r in recipients]

    def _deliver(self, message, key: str, *, recipient: str, source: str, null_sender: bool) -> Reply:
        refused = self.check_recipient(recipient)
        if refused is not None:
            return refused
        role, token = self._role(recipient)
        try:
            report, note = self._report(message, role=role, token=token, source=source, key=key,
                                        null_sender=null_sender)
        except (LookupError, ValueError, TypeError, AttributeError) as exc:  # a malformed part the parser let by
            self._log(source, recipient, "refused", f"unreadable ({type(exc).__name__})")
            return UNREADABLE
        if report is None:
            if note is None:
                self._log(source, recipient, "refused", "unattributable")
                return UNATTRIBUTED
            self._log(source, recipient, "accepted", note)
            return OK
        try:
            with db.session_scope(self.engine) as session:
                report = self._attribute_by_message_id(session, report)
                done = events.record(session, report, now=self.clock(), soft_limit=self.soft_limit)
        except events.Unattributable as exc:
            self._log(source, recipient, "refused", str(exc))
            return UNATTRIBUTED
        except Exception:
            log.exception("inbound source=%s: could not record", source)
            return TRY_LATER
        self._log(source, recipient, "duplicate" if done.duplicate else "recorded",
                  f"kind={done.kind.value} delivery={done.delivery_id} subscriber={done.subscriber_id} "
                  f"effect={done.effect}")
        return OK

    def _report(self, message, *, role, token, source, key, null_sender):
        """(Report or None, a note when there is nothing to do but it is ours)."""
        delivery_id = links.read_verp_token(self.secret, token) if token else None
        complaint = arf.read(message)
        if complaint is not None:
            if not complaint.is_complaint:
                return None, f"feedback report of type {complaint.feedback_type or '?'}: nothing to do"
            delivery_id = delivery_id or self._token_delivery(complaint.original_mail_from,
                                                              complaint.returned_return_path)
            report = _Pending(Kind.complaint, source, delivery_id, None, None,
                              f"feedback-type {complaint.feedback_type} {complaint.user_agent}".strip(), key,
                              complaint.returned_message_id, complaint.original_rcpt_to)
            return report.ready(), None
        bounce = dsn.read(message, null_sender=null_sender)
        if bounce is not None:
            kind = outcomes.status_class(bounce.status, action=bounce.action)
            delivery_id = delivery_id or self._token_delivery(bounce.returned_return_path)
            if kind == Kind.ignored:
                return None, f"delivery status {bounce.action or '?'} {bounce.status or ''}: nothing to do"
            report = _Pending(kind, source, delivery_id, None, bounce.status, bounce.diagnostic, key,
                              bounce.returned_message_id, bounce.recipient)
            return report.ready(), None
        if role == "unsubscribe":
            subscriber_id = self._unsubscribe_claims(message)
            if subscriber_id is None:
                return None, None
            return events.Report(Kind.unsubscribe, source, subscriber_id=subscriber_id,
                                 event_key=f"{key}#s{subscriber_id}"), None
        if delivery_id is not None:  # to a VERP path, but no bounce: an auto-reply
            return None, "not a bounce or a complaint: nothing to do"
        return None, None

    def _token_delivery(self, *paths: str | None) -> int | None:
        for path in paths:
            if not path:
                continue
            token = links.verp_part(self.bounce_address, mailparts.bare_address(path) or path)
            if token:
                try:
                    return links.read_verp_token(self.secret, token)
                except links.TokenError:
                    continue  # a forged path inside the report proves nothing
        return None

    def _attribute_by_message_id(self, session, report):
        if not isinstance(report, _ByMessageId):
            return report
        delivery_id = delivery_in_message_id(report.message_id, self.installation)
        delivery = session.get(Delivery, delivery_id) if delivery_id is not None else None
        reader = session.get(Subscriber, delivery.subscriber_id) if delivery is not None else None
        if reader is None or not report.recipient or reader.address.lower() != report.recipient:
            raise events.Unattributable("the returned message is not one of ours for the address it names")
        return events.Report(report.kind, report.source, delivery_id=delivery_id, status=report.status,
                             diagnostic=report.diagnostic, event_key=f"{report.event_key}#d{delivery_id}")

    def _unsubscribe_claims(self, message) -> int | None:
        texts = [mailparts.decoded_header(message, "Subject")]
        for part in mailparts.parts(message):
            if part.get_content_type() == "text/plain":
                texts.append(mailparts.text_of(part))
                break
        for text in texts:
            for pattern in (UNSUBSCRIBE_LINK, SIGNED_TOKEN):
                match = pattern.search(text)
                if match is None:
                    continue
                try:
                    claims = links.read_token(self.secret, match.group(1), purpose="unsubscribe")
                except links.TokenError:
                    continue
                with db.session_scope(self.engine) as session:
                    reader = session.get(Subscriber, claims.subscriber_id)
                    if reader is not None and claims.is_for(reader.address):
                        return reader.id
        return None

    def _log(self, source: str, recipient: str, outcome: str, detail: str) -> None:
        log.info("inbound source=%s to=%s outcome=%s %s", source, recipient[:320], outcome, detail)


@dataclass(frozen=True)
class _Pending:
    kind: Kind
    source: str
    delivery_id: int | None
    subscriber_id: int | None
    status: str | None
    diagnostic: str
    event_key: str
    message_id: str | None
    recipient: str | None

    def ready(self):
        if self.delivery_id is not None:
            return events.Report(self.kind, self.source, delivery_id=self.delivery_id, status=self.status,
                                 diagnostic=self.diagnostic, event_key=f"{self.event_key}#d{self.delivery_id}")
        if self.message_id:
            return _ByMessageId(self.kind, self.source, self.status, self.diagnostic, self.event_key,
                                self.message_id, self.recipient)
        return None


@dataclass(frozen=True)
class _ByMessageId:
    kind: Kind
    source: str
    status: str | None
    diagnostic: str
    event_key: str
    message_id: str
    recipient: str | None


def delivery_in_message_id(message_id: str, installation: str) -> int | None:
    """``<delivery-42.<tag>@domain>`` → 42, only when the tag is this
    installation's keyed hash of 42 (mime.delivery_tag): a Message-ID seen
    in one reader's email cannot be edited into another reader's."""
    local = message_id.strip("<>").partition("@")[0]
    head, _, part = local.partition(".")
    digits = head.removeprefix("delivery-")
    if not (head.startswith("delivery-") and digits.isascii() and digits.isdigit() and len(digits) <= 19
            and installation and len(part) == mime.DELIVERY_TAG_CHARS):
        return None
    delivery_id = int(digits)
    return delivery_id if hmac.compare_digest(part.lower(), mime.delivery_tag(installation, delivery_id)) else None


def _event_key(message, data: bytes) -> str:
    """What makes a second copy of the same report change nothing."""
    own = mailparts.header(message, "Message-ID")
    if own.startswith("<") and own.endswith(">") and len(own) <= 180:
        return "mid:" + own
    return "sha256:" + hashlib.sha256(data).hexdigest()
