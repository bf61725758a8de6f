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
    - ``data_replies``: answers to give at the end of DATA instead of 250
      (e.g. "451 4.3.0 try later"); the special value DROP closes the
      connection after the message was received, before answering;
    - ``delay``: seconds to wait before accepting each message.
    """

    DROP = "drop"

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.refuse: dict[str, str] = {}
        self.data_replies: deque[str] = deque()
        self.delay = 0.0
        self.connections = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.data_replies:
            reply = self.data_replies.popleft()
            if reply == self.DROP:
                server.transport.close()
                return "250 never seen"
            return reply
        return await super().handle_DATA(server, session, envelope)


def scripted_smtp(folder: Path, **kwargs) -> tuple[SmtpSink, ScriptedHandler]:
    handler = ScriptedHandler(folder)
    return SmtpSink(folder, handler=handler, **kwargs).start(), handler


def tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context and the CA file a client must trust for it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file
