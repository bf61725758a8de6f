"""Real servers on loopback for the delivery tests: an aiosmtpd SMTP server
whose answers a test can script, and the Slack sink."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from pathlib import Path

import trustme

from dispatch.sink import MailFolderHandler, SmtpSink


class ScriptedHandler(MailFolderHandler):
    """Accepts mail like the sink, unless told otherwise:
    - ``refuse[address] = "550 5.1.1 no such user"``: refuse that recipient;
    - ``refuse_data[address] = "554 5.7.1 refused"``: answer a message to that
      recipient so at the end of its DATA;
    - ``data_replies``: answers to give at the end of DATA instead of 250
      (e.g. "451 4.3.0 try later"); the special value DROP closes the
      connection after the message was received, before answering;
    - ``delay``: seconds to wait before accepting each message;
    - ``pipelining``: offer PIPELINING (RFC 2920) in the EHLO answer, as
      Postfix, Exim and the large providers do (on by default: what the
      sender meets in practice). aiosmtpd reads commands a line at a time,
      so commands that arrive together are answered in order.
    """

    DROP = "drop"

    def __init__(self, folder: Path, *, pipelining: bool = True):
        super().__init__(folder)
        self.pipelining = pipelining
        self.refuse: dict[str, str] = {}
        self.refuse_data: dict[str, str] = {}
        self.data_replies: deque[str] = deque()
        self.delay = 0.0
        self.connections = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        for address in envelope.rcpt_tos:
            if address in self.refuse_data:
                return self.refuse_data[address]
        if self.data_replies:
            reply = self.data_replies.popleft()
            if reply == self.DROP:
                server.transport.close()
                return "250 never seen"
            return reply
        return await super().handle_DATA(server, session, envelope)


def scripted_smtp(folder: Path, *, pipelining: bool = True, **kwargs) -> tuple[SmtpSink, ScriptedHandler]:
    handler = ScriptedHandler(folder, pipelining=pipelining)
    return SmtpSink(folder, handler=handler, **kwargs).start(), handler


def tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context and the CA file a client must trust for it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file
