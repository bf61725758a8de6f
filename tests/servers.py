"""Real servers on loopback for the delivery tests: an aiosmtpd SMTP server
whose answers a test can script, and the Slack sink."""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
import struct
import threading
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


class RawRelay:
    """A line-at-a-time SMTP relay on a plain socket, offering PIPELINING,
    for answers aiosmtpd will not give: a test scripts the raw bytes written
    for a command (``replies["MAIL" | "RCPT" | "DATA" | "END" | "RSET"]``,
    "END" being the answer to a message's final dot), so a reply can come
    with extra lines, out of order, or not at all (b""); after a 421 the relay
    closes the connection, as RFC 5321 has it. ``RESET`` as an END
    answer writes 250 and resets the connection (SO_LINGER 0), setting
    ``reset``; ``HANG`` takes the message and never answers anything again
    (a relay stuck scanning it). Every message it took is kept with its envelope recipients."""

    RESET = b"reset"
    HANG = b"hang"
    DEFAULT = {"MAIL": b"250 2.1.0 ok\r\n", "RCPT": b"250 2.1.5 ok\r\n", "DATA": b"354 go ahead\r\n",
               "END": b"250 2.0.0 queued\r\n", "RSET": b"250 2.0.0 reset\r\n"}

    def __init__(self):
        self.replies: dict[str, deque[bytes]] = {verb: deque() for verb in self.DEFAULT}
        self.messages: list[tuple[list[str], bytes]] = []
        self.connections = 0
        self.reset = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def stop(self) -> None:
        self._listener.close()

    def message_ids(self) -> list[str]:
        return [email.message_from_bytes(data)["Message-ID"] for _, data in self.messages]

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._converse, args=(sock,), daemon=True).start()

    def _answer(self, verb: str) -> bytes:
        return self.replies[verb].popleft() if self.replies[verb] else self.DEFAULT[verb]

    @staticmethod
    def _say(sock, answer: bytes) -> None:
        sock.sendall(answer)
        if answer.startswith(b"421"):
            raise ConnectionAbortedError("421: closing")  # ends the conversation; the socket is closed

    def _converse(self, sock) -> None:
        file = sock.makefile("rb")
        sock.sendall(b"220 raw relay\r\n")
        recipients: list[str] = []
        try:
            while line := file.readline():
                verb = line[:4].upper().decode("ascii", "replace")
                if verb in ("EHLO", "HELO"):
                    answer = b"250-raw relay\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                elif verb == "QUIT":
                    sock.sendall(b"221 bye\r\n")
                    return
                elif verb == "NOOP":
                    answer = b"250 ok\r\n"
                elif verb in ("MAIL", "RSET"):
                    recipients = []
                    answer = self._answer(verb)
                elif verb == "RCPT":
                    recipients.append(line.split(b"<", 1)[1].split(b">", 1)[0].decode())
                    answer = self._answer(verb)
                elif verb == "DATA":
                    answer = self._answer(verb)
                    if b"354" in answer:
                        sock.sendall(answer)
                        answer = self._take_message(sock, file, recipients)
                        if answer is None:
                            return
                else:
                    answer = b"500 unknown command\r\n"
                self._say(sock, answer)
        except OSError:
            pass
        finally:
            sock.close()

    def _take_message(self, sock, file, recipients: list[str]) -> bytes | None:
        """The data up to the final dot, kept; the answer to give, or None
        when the connection ended (dropped by the client, or reset here)."""
        data = b""
        while (chunk := file.readline()) != b".\r\n":
            if not chunk:
                return None  # dropped before the final dot: no message
            data += chunk[1:] if chunk.startswith(b"..") else chunk
        self.messages.append((recipients, data))
        answer = self._answer("END")
        if answer == self.HANG:
            while file.readline():  # alive, reading, never answering again
                pass
            return None
        if answer != self.RESET:
            return answer
        sock.sendall(self.DEFAULT["END"])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self.reset.set()
        return None
