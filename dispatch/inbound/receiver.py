"""`dispatch inbound`: bounces, complaints and mailto unsubscribes over SMTP
or LMTP (aiosmtpd), or one message on standard input (an MTA's pipe transport).

Recipients are checked at RCPT (a bad VERP token is a 550 there); a
message is bounded by aiosmtpd's ``data_size_limit`` while it streams, and
handled in a thread, since recording is database work; it is parsed once
however many recipients it has. LMTP answers once per recipient after
DATA, as RFC 2033 requires.
"""

from __future__ import annotations

import asyncio
import logging

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from sqlalchemy.engine import Engine

from dispatch import bootstrap
from dispatch.config import Settings
from dispatch.inbound import mailparts
from dispatch.inbound.inbox import TOO_LARGE, Inbox, Reply

log = logging.getLogger("dispatch.inbound")
MAX_RECIPIENTS = 20


def build_inbox(settings: Settings, engine: Engine) -> Inbox:
    from email.utils import parseaddr

    from_address = parseaddr(settings.mail_from)[1]
    return Inbox(engine, secret=bootstrap.secret_key(engine, settings),
                 installation=bootstrap.installation_id(engine),
                 bounce_address=settings.bounce_address or from_address,
                 unsubscribe_address=settings.unsubscribe_mailto or from_address,
                 soft_limit=settings.soft_bounce_limit)


class InboundHandler:
    def __init__(self, inbox: Inbox, *, source: str):
        self.inbox = inbox
        self.source = source

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        refused = self.inbox.check_recipient(address)
        if refused is not None:
            return str(refused)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or b""
        null_sender = envelope.mail_from in ("", "<>", None)
        # Parsed once for every recipient; each still gets its own answer.
        replies: list[Reply] = await asyncio.to_thread(self.inbox.deliver_all, data, recipients=list(envelope.rcpt_tos),
                                                       source=self.source, null_sender=null_sender)
        if self.source == "lmtp":
            # One reply per accepted recipient (RFC 2033 §4.2), each its own line.
            return "\r\n".join(str(r) for r in replies)
        accepted = [r for r in replies if r.code < 400]
        return str(accepted[0] if accepted else replies[0])


class _Controller(Controller):
    def __init__(self, handler, *, lmtp: bool, **kwargs):
        self.lmtp = lmtp
        super().__init__(handler, **kwargs)

    def factory(self):
        cls = LMTP if self.lmtp else SMTP
        return cls(self.handler, **self.SMTP_kwargs)


class InboundServer:
    def __init__(self, inbox: Inbox, *, host: str = "127.0.0.1", port: int = 2525, lmtp: bool = False):
        self.handler = InboundHandler(inbox, source="lmtp" if lmtp else "smtp")
        # An explicit host: hostname=None would bind ::1 only (aiosmtpd).
        self.controller = _Controller(self.handler, lmtp=lmtp, hostname=host, port=port or _free_port(host),
                                      data_size_limit=mailparts.MAX_MESSAGE_BYTES, auth_require_tls=False,
                                      server_hostname="dispatch-inbound", ident="dispatch inbound")

    @property
    def host(self) -> str:
        return self.controller.hostname

    @property
    def port(self) -> int:
        return self.controller.port

    def start(self) -> InboundServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_stdin(stream, inbox: Inbox, *, recipient: str, null_sender: bool = False) -> Reply:
    """One message from an MTA's pipe transport, read with a size limit."""
    data = stream.read(mailparts.MAX_MESSAGE_BYTES + 1)
    if len(data) > mailparts.MAX_MESSAGE_BYTES:
        return TOO_LARGE
    return inbox.deliver(data, recipient=recipient, source="stdin", null_sender=null_sender)
