"""`dispatch inbound`: bounces, complaints and mailto unsubscribes over SMTP
or LMTP (aiosmtpd), or one message on standard input (an MTA's pipe transport).

Recipients are checked at RCPT (a bad VERP token is a 550 there); a
message is bounded by aiosmtpd's ``data_size_limit`` while it streams, and
handled in a thread, since recording is database work; it is parsed once
however many recipients it has. LMTP answers once per recipient after
DATA, as RFC 2033 requires.

Every connection is bounded (``Limits``), so nobody holds one, or all of
them, with NOOPs, RSETs or silence: a budget of each command, an idle
timeout, a lifetime, and a number of connections at once. Whatever is cut
off is told 421, which a sending MTA answers by trying again later: a
bounce cut off is delayed, not lost.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

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


# How often each command may come in one connection (aiosmtpd's
# command_call_limit; one more is a 421 and the end of it). A sending MTA
# may pass many messages over one connection (Postfix caches them for up to
# 300 s), each MAIL, RCPT… DATA, RSET; nothing else has a reason to repeat.
MESSAGES_PER_CONNECTION = 100
COMMAND_BUDGET = {"MAIL": MESSAGES_PER_CONNECTION, "DATA": MESSAGES_PER_CONNECTION,
                  "RSET": MESSAGES_PER_CONNECTION, "RCPT": MESSAGES_PER_CONNECTION * MAX_RECIPIENTS, "*": 10}


@dataclass(frozen=True)
class Limits:
    # At once; one more is greeted with 421 and closed. Each may hold a
    # message of up to 4 MB while it arrives; Postfix sends to one
    # destination over at most 20 by default.
    connections: int = 50
    # Between two commands (RFC 5321 §4.5.3.2.7: 5 minutes); aiosmtpd also
    # wants a message's whole data within it, so a trickled message ends too.
    # Lines it refuses (empty, too long, bad bytes) do not restart it.
    idle_seconds: float = 300
    lifetime_seconds: float = 600  # a connection in all, however busy (Postfix reuses one for 300 s)
    commands: dict = field(default_factory=lambda: dict(COMMAND_BUDGET))


class _Gate:
    """The connections open now; used on the server's event loop only, so a plain count."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0


class _Bounded:
    """An SMTP or LMTP server protocol that counts itself against the gate
    and closes itself when its lifetime is over (aiosmtpd has neither)."""

    def __init__(self, handler, *, gate: _Gate, lifetime: float, **kwargs):
        super().__init__(handler, **kwargs)
        self._gate, self._lifetime = gate, lifetime
        self._admitted = False
        self._lifetime_over = None

    def connection_made(self, transport) -> None:
        if self._admitted:  # STARTTLS makes it again for the same connection
            return super().connection_made(transport)
        if self._gate.open >= self._gate.limit:
            log.warning("inbound: %s connections open already; one more refused", self._gate.open)
            transport.write(b"421 4.3.2 too many connections, try again later\r\n")
            transport.close()
            return  # never started, so connection_lost has nothing of aiosmtpd's to end
        self._admitted = True
        self._gate.open += 1
        super().connection_made(transport)
        self._lifetime_over = self.loop.call_later(self._lifetime, self._end_of_life, transport)

    def _end_of_life(self, transport) -> None:
        log.info("inbound: a connection reached its time limit (%s s)", self._lifetime)
        transport.write(b"421 4.4.2 connection time limit reached, try again later\r\n")
        transport.close()

    def connection_lost(self, error) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._gate.open -= 1
        self._lifetime_over.cancel()
        super().connection_lost(error)


class _BoundedSMTP(_Bounded, SMTP):
    pass


class _BoundedLMTP(_Bounded, LMTP):
    pass


class _Controller(Controller):
    def __init__(self, handler, *, lmtp: bool, **kwargs):
        self.lmtp = lmtp
        super().__init__(handler, **kwargs)

    def factory(self):
        cls = _BoundedLMTP if self.lmtp else _BoundedSMTP
        return cls(self.handler, **self.SMTP_kwargs)


class InboundServer:
    def __init__(self, inbox: Inbox, *, host: str = "127.0.0.1", port: int = 2525, lmtp: bool = False,
                 limits: Limits = Limits()):
        self.handler = InboundHandler(inbox, source="lmtp" if lmtp else "smtp")
        # An explicit host: hostname=None would bind ::1 only (aiosmtpd).
        self.controller = _Controller(self.handler, lmtp=lmtp, hostname=host, port=port or _free_port(host),
                                      data_size_limit=mailparts.MAX_MESSAGE_BYTES, auth_require_tls=False,
                                      server_hostname="dispatch-inbound", ident="dispatch inbound",
                                      timeout=limits.idle_seconds, command_call_limit=dict(limits.commands),
                                      gate=_Gate(limits.connections), lifetime=limits.lifetime_seconds)

    @property
    def host(self) -> str:
        return self.controller.hostname

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def open_connections(self) -> int:
        return self.controller.SMTP_kwargs["gate"].open

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
