"""Email over SMTP: a pool of persistent connections, STARTTLS or implicit
TLS, AUTH, a sending-rate limit, and smtplib's errors mapped to ours.

A new connection per message is several times slower than reusing one, so
connections stay open and go back to the pool after each message. One that
has been idle for a while is checked with NOOP before use, so a relay that
dropped it is noticed before a message is at stake. A drop during a
transaction is a TransientError: the message may or may not have arrived,
and the deterministic Message-ID lets duplicates be told apart.
"""

from __future__ import annotations

import queue
import smtplib
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from email.utils import parseaddr
from pathlib import Path

from dispatch import mime
from dispatch.config import SmtpSecurity, control_characters, mailbox_problem, plaintext_auth_problem
from dispatch.errors import PermanentError, TransientError
from dispatch.render import EmailContent

IDLE_CHECK_SECONDS = 20.0


class RateLimiter:
    """At most ``rate`` events a second, spread evenly; 0 means no limit.
    Waiting happens before any I/O."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class SmtpAdapter:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: SmtpSecurity = SmtpSecurity.none,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ca_file: Path | None = None,
        mail_from: str,
        reply_to: str | None = None,
        list_id: str | None = None,
        unsubscribe_mailto: str | None = None,
        pool_size: int = 2,
        rate_limit: float = 0.0,
        allow_plaintext_auth: bool = False,
        installation: str = "",
    ):
        # The same checks as the settings make, for callers that build an
        # adapter themselves: every value here ends up in a header or on the wire.
        for label, value, bare in (("mail_from", mail_from, False), ("reply_to", reply_to, False),
                                   ("unsubscribe_mailto", unsubscribe_mailto, True)):
            problem = value is not None and mailbox_problem(value, display_name=not bare)
            if problem:
                raise ValueError(f"{label}: {problem}")
        if list_id is not None and control_characters(list_id):
            raise ValueError("list_id: must not contain line breaks or other control characters")
        if bool(username) != bool(password):
            raise ValueError("set both smtp_username and smtp_password, or neither")
        problem = plaintext_auth_problem(host=host, security=security, username=username,
                                         allowed=allow_plaintext_auth)
        if problem:
            raise ValueError(problem)
        name, address = parseaddr(mail_from)
        if installation and not (installation.isascii() and installation.isalnum() and len(installation) <= 32):
            raise ValueError("installation: at most 32 letters and digits")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"smtp_ca_file {ca_file} does not exist")
        self.host, self.port, self.security = host, port, SmtpSecurity(security)
        self.username, self.password, self.timeout = username, password, timeout
        self.envelope_from = address
        self.installation = installation
        self.domain = address.rsplit("@", 1)[1]
        self.sender = mail_from
        self.reply_to = reply_to
        self.list_id = list_id or f"<briefings.{self.domain}>"
        self.unsubscribe_mailto = unsubscribe_mailto or address
        # Made (and a bad CA file refused) at start-up, but only for TLS: loading
        # the system's CA store costs some 0.1 s in every sender process.
        self._tls = (ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
                     if self.security != SmtpSecurity.none else None)
        # The pool: permits to hold a connection (as many as pool_size) in a
        # queue.SimpleQueue, and the idle connections on a stack, the last one
        # used on top. SimpleQueue is C code and list.append/pop are atomic:
        # taking and giving back costs no Python-level lock or condition, as
        # the semaphore and LifoQueue this replaced did for every message.
        self.pool_size = pool_size
        self._permits: queue.SimpleQueue[bool] = queue.SimpleQueue()
        for _ in range(pool_size):
            self._permits.put(True)
        self._idle: list[tuple[_Connection, float]] = []
        self._rate = RateLimiter(rate_limit)
        # For readiness and metrics: when the relay last answered anything
        # (time.monotonic()), and how many connections a send holds now.
        self.last_answer: float | None = None
        self._eight_bit = False  # what the last connection said of 8BITMIME

    @property
    def connections_in_use(self) -> int:
        return max(0, self.pool_size - self._permits.qsize())

    def _answered(self) -> None:
        self.last_answer = time.monotonic()

    def probe(self, *, timeout: float = 5.0) -> str | None:
        """Open a connection, NOOP and QUIT: None when the relay answered,
        else why not. Used by /readyz when no message went out lately."""
        try:
            conn = self._connect(timeout=min(timeout, self.timeout))
        except TransientError as exc:
            return str(exc)
        try:
            code = conn.noop()[0]
            conn.quit()
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(conn)
            return f"SMTP server {self.host}:{self.port} dropped the connection: {_describe(exc)}"
        return None if code == 250 else f"SMTP server {self.host}:{self.port} answered NOOP with {code}"

    # --- connections ----------------------------------------------------------

    def _connect(self, *, timeout: float | None = None) -> smtplib.SMTP:
        timeout = timeout or self.timeout
        try:
            if self.security == SmtpSecurity.ssl:
                conn = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=self._tls)
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=timeout)
                if self.security == SmtpSecurity.starttls:
                    conn.starttls(context=self._tls)
            # Every write is a whole group of commands or a whole message: Nagle's
            # algorithm would only hold the small ones back (with pipelining, for
            # the relay's delayed ACK of a message's data, up to 40 ms).
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.ehlo_or_helo_if_needed()  # learn PIPELINING / 8BITMIME before the first message
            if self.username:
                conn.login(self.username, self.password)
            self._answered()
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientError(f"SMTP login to {self.host}:{self.port} refused: {_reply(exc)}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise TransientError(f"{self.host}:{self.port} does not offer {exc}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"cannot connect to SMTP server {self.host}:{self.port}: {_describe(exc)}") from exc

    def _acquire(self) -> _Connection:
        """Wait for a permit; the last idle connection that is still fit, or
        a new one, held (its lock taken) by the caller, who must ``_release`` it."""
        self._permits.get()
        try:
            while self._idle:
                try:
                    conn, idle_since = self._idle.pop()
                except IndexError:  # another thread took the last one
                    break
                conn.lock.acquire()
                if self._usable(conn, idle_since):
                    return conn
                conn.lock.release()
            conn = _Connection(self._connect())
        except BaseException:
            self._permits.put(True)
            raise
        conn.lock.acquire()
        return conn

    def _usable(self, conn: _Connection, idle_since: float) -> bool:
        """A held connection from the pool: still fit to send on? One idle a
        while settles what it owes and is asked with NOOP first."""
        if conn.dead:
            return False
        if time.monotonic() - idle_since < IDLE_CHECK_SECONDS:
            return True
        self._settle_owed(conn)
        try:
            if not conn.dead and conn.smtp.noop()[0] == 250:
                return True
        except (OSError, smtplib.SMTPException):
            pass
        self._discard(conn)
        return False

    def _release(self, conn: _Connection) -> None:
        """Let go of a held connection: back on the idle stack unless it died."""
        conn.lock.release()
        if not conn.dead:
            self._idle.append((conn, time.monotonic()))
        self._permits.put(True)

    def close(self) -> None:
        """Settle every reply still owed, then QUIT each idle connection."""
        while True:
            try:
                conn, _ = self._idle.pop()
            except IndexError:
                return
            with conn.lock:
                self._settle_owed(conn)
                if conn.dead:
                    continue
                try:
                    conn.smtp.quit()
                except (OSError, smtplib.SMTPException):
                    _quietly_close(conn.smtp)
                conn.dead = True

    # --- sending --------------------------------------------------------------

    def build(self, address: str, content: EmailContent, *, delivery_id: int,
              eight_bit: bool = False, message_id: str | None = None, stuffed: bool = False) -> tuple[str, bytes]:
        """The Message-ID and the bytes of the message for one reader
        (``stuffed``: dot-stuffed, as DATA carries them)."""
        msg_id = message_id or mime.message_id(delivery_id, self.domain, installation=self.installation)
        data = mime.build_message(content, sender=self.sender, to=address, msg_id=msg_id, list_id=self.list_id,
                                  unsubscribe_mailto=self.unsubscribe_mailto, reply_to=self.reply_to,
                                  date=datetime.now(timezone.utc), eight_bit=eight_bit, stuffed=stuffed)
        return msg_id, data

    def send(self, address: str, content: EmailContent, *, delivery_id: int = 0, progress: str | None = None,
             message_id: str | None = None) -> str:
        """Send one message and wait for the server's answer; ``message_id``
        replaces the per-delivery one (for messages that are not digests,
        such as a confirmation)."""
        return self.send_later(address, content, delivery_id=delivery_id, progress=progress,
                               message_id=message_id).result()

    def send_later(self, address: str, content: EmailContent, *, delivery_id: int = 0,
                   progress: str | None = None, message_id: str | None = None) -> Receipt:
        """Send one message without waiting for the answer to its data where
        the server offers PIPELINING: that answer is read with the next
        message's replies on the same connection (RFC 2920), so a message
        costs one round trip instead of two. ``Receipt.result()`` gives the
        outcome, reading the answer itself if no later message has.
        Refusals of the sender or the recipient raise here, as ``send`` does."""
        self._rate.wait()
        envelope_from = _envelope_from(content)
        # Built before a connection is taken, as the last connection said
        # 8BITMIME or not, so that one thread builds while another holds the
        # connection on the wire; rebuilt in the rare case this one differs.
        eight_bit = self._eight_bit
        msg_id, data = self.build(address, content, delivery_id=delivery_id, eight_bit=eight_bit,
                                  message_id=message_id, stuffed=True)
        conn = self._acquire()
        try:
            if conn.smtp.has_extn("8bitmime") != eight_bit:
                eight_bit = self._eight_bit = conn.smtp.has_extn("8bitmime")
                msg_id, data = self.build(address, content, delivery_id=delivery_id, eight_bit=eight_bit,
                                          message_id=message_id, stuffed=True)
            return self._transact(conn, address, msg_id, data, eight_bit=eight_bit, envelope_from=envelope_from)
        finally:
            self._release(conn)

    def _transact(self, conn: _Connection, address: str, msg_id: str, data: bytes, *, eight_bit: bool,
                  envelope_from: str | None = None) -> Receipt:
        """One message (``data`` dot-stuffed) on a held connection. A connection
        that cannot be trusted any more is closed (and marked dead)."""
        smtp = conn.smtp
        receipt = Receipt(self, conn, msg_id)
        pipelining = smtp.has_extn("pipelining")
        try:
            # The previous message's data and final dot, if still to be written, go in
            # the same write as this message's commands: the relay reads them together
            # and answers all four at once (RFC 2920: the next MAIL right after the dot).
            finish, conn.unfinished = conn.unfinished, ()
            _open_transaction(smtp, envelope_from or self.envelope_from, address, eight_bit=eight_bit,
                              before=finish, before_replies=lambda: self._settle_owed(conn))
            if pipelining:
                # The relay said 354: its data and final dot go with the next message's
                # commands, one write for both (a write less per message, for us and the
                # relay), or when the answer is asked for (Receipt.result, idle checks, close).
                conn.unfinished, conn.owed = (data, _terminator(data)), receipt
                return receipt
            smtp.send(data + _terminator(data))  # one write: two would meet Nagle and delayed ACK
            code, text = _getreply(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            self._answered()
            code, text = exc.recipients.get(address, (0, b""))
            self._reset(conn)
            message = f"{address} refused: {code} {_text(text)}"
            if 500 <= code < 600:
                raise PermanentError(message, blames_recipient=True) from exc
            raise TransientError(message) from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, DATA refused, 421 …
            self._answered()
            if exc.smtp_code == 421:
                self._discard(conn)  # the server is closing this connection
            else:
                self._reset(conn)
            if isinstance(exc, smtplib.SMTPSenderRefused):  # our own sender: fix and retry
                raise TransientError(f"server answered {exc.smtp_code} {_text(exc.smtp_error)}") from exc
            raise self._refusal(exc.smtp_code, exc.smtp_error) from exc
        except (OSError, smtplib.SMTPException) as exc:
            self._discard(conn)
            raise self._lost(exc) from exc
        self._answered()
        receipt.settle(self._data_outcome(conn, code, text))
        return receipt

    def _settle_owed(self, conn: _Connection) -> None:
        """Read the answer to the data of the message this held connection
        last sent, if it is still owed, and settle that message's receipt."""
        owed, conn.owed = conn.owed, None
        if owed is None:
            return
        try:
            finish, conn.unfinished = conn.unfinished, ()
            if finish:  # no next message came: its data and final dot go alone
                conn.smtp.send(b"".join(finish))
            code, text = _getreply(conn.smtp)
        except (OSError, smtplib.SMTPException) as exc:
            self._discard(conn)
            owed.settle(self._lost(exc))
            return
        self._answered()
        owed.settle(self._data_outcome(conn, code, text))

    def _data_outcome(self, conn: _Connection, code: int, text: bytes) -> Exception | None:
        """What the answer to a message's data means: None when accepted. The
        transaction is over either way (no RSET needed)."""
        if code == 250:
            return None
        if code == 421 or not 400 <= code < 600:  # closing, or out of step (no answer to a final dot)
            self._discard(conn)
        return self._refusal(code, text)

    def _refusal(self, code: int, text) -> Exception:
        message = f"server answered {code} {_text(text)}"
        return PermanentError(message) if 500 <= code < 600 else TransientError(message)

    def _lost(self, exc: BaseException) -> TransientError:
        # The message may or may not have arrived: the deterministic Message-ID tells a resend apart.
        return TransientError(f"connection to {self.host}:{self.port} lost: {_describe(exc)}")

    def _reset(self, conn: _Connection) -> None:
        try:
            if conn.smtp.rset()[0] == 250:
                return
        except (OSError, smtplib.SMTPException):
            pass
        self._discard(conn)  # refused or out of step: the transaction may still be open

    def _discard(self, conn: _Connection) -> None:
        """Close a connection for good. An answer it still owed can never be
        read now: that message may or may not have arrived."""
        conn.dead = True
        conn.unfinished = ()
        _quietly_close(conn.smtp)
        owed, conn.owed = conn.owed, None
        if owed is not None:
            owed.settle(TransientError(f"connection to {self.host}:{self.port} lost before the answer to "
                                       f"{owed.msg_id} was read"))


class _Connection:
    """A pooled SMTP connection, the lock its holder takes, and the receipt
    whose data answer it still owes (with PIPELINING, that answer is read
    just before the next message's replies)."""

    __slots__ = ("smtp", "lock", "owed", "unfinished", "dead")

    def __init__(self, smtp: smtplib.SMTP):
        self.smtp = smtp
        self.lock = threading.Lock()
        self.owed: Receipt | None = None
        self.unfinished: tuple[bytes, ...] = ()  # the owed message's data and final dot, when not written yet
        self.dead = False


class Receipt:
    """The outcome of one message whose data went out: its Message-ID once
    the server accepted it, or the error the answer (or a lost connection)
    means. Settled by whoever reads the answer, under the connection's lock."""

    __slots__ = ("_adapter", "_conn", "msg_id", "_outcome")

    def __init__(self, adapter: SmtpAdapter, conn: _Connection, msg_id: str):
        self._adapter, self._conn, self.msg_id = adapter, conn, msg_id
        # (error or None,) once settled: one attribute, written at once, so a
        # thread that reads it without the lock sees all of the outcome or none.
        self._outcome: tuple[Exception | None] | None = None

    def settle(self, error: Exception | None) -> None:
        self._outcome = (error,)

    @property
    def settled(self) -> bool:
        """Whether the server's answer has been read."""
        return self._outcome is not None

    def result(self) -> str:
        """The Message-ID, or the TransientError / PermanentError the answer meant."""
        outcome = self._outcome
        if outcome is None:
            with self._conn.lock:
                if self._outcome is None:
                    self._adapter._settle_owed(self._conn)
                if self._outcome is None:  # owed by no connection, so never to be read: not accepted
                    self.settle(self._adapter._lost(RuntimeError("its answer was never read")))
            outcome = self._outcome
        if outcome[0] is not None:
            raise outcome[0]
        return self.msg_id


def _open_transaction(conn: smtplib.SMTP, sender: str, recipient: str, *, eight_bit: bool,
                      before: tuple[bytes, ...] = (), before_replies) -> None:
    """MAIL, RCPT and DATA, up to the server's 354, raising smtplib's own
    exceptions, after ``before`` (the previous message's data and final dot,
    when still to be written). Where the server offers PIPELINING (RFC 2920)
    all go in one write; ``before_replies`` then reads whatever the
    connection still owed from the previous message (its data's answer comes first)."""
    conn.ehlo_or_helo_if_needed()
    body = b" BODY=8BITMIME" if eight_bit else b""
    mail = b"MAIL FROM:<%s>%s\r\n" % (sender.encode(), body)
    rcpt = b"RCPT TO:<%s>\r\n" % recipient.encode()
    if conn.has_extn("pipelining"):
        conn.send(b"".join((*before, mail, rcpt, b"DATA\r\n")))
        before_replies()
        _still_open(conn)
        replies = [_getreply(conn) for _ in range(3)]
    else:
        if before:
            conn.send(b"".join(before))
        before_replies()
        _still_open(conn)
        replies = []
        for command in (mail, rcpt, b"DATA\r\n"):
            conn.send(command)
            replies.append(_getreply(conn))
            if replies[-1][0] >= 400:
                break
    if _out_of_step(replies):
        conn.close()  # the next reply read would answer some other command: nothing on it can be trusted
        raise smtplib.SMTPServerDisconnected(
            "the server's replies are out of step with the commands: " + ", ".join(str(c) for c, _ in replies))
    mail_reply, rcpt_reply, data_reply = (replies + [(0, b"")] * 3)[:3]
    if (mail_reply[0] != 250 or rcpt_reply[0] not in (250, 251)) and data_reply[0] == 354:
        conn.close()  # a server that opens DATA without a recipient cannot be trusted with more
    if mail_reply[0] != 250:
        raise smtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], sender)
    if rcpt_reply[0] not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({recipient: rcpt_reply})
    if data_reply[0] != 354:
        raise smtplib.SMTPDataError(data_reply[0], data_reply[1])


def _getreply(conn: smtplib.SMTP) -> tuple[int, bytes]:
    """smtplib's getreply, except that a line too long for it to read is a
    broken stream, not the server's 500 (which smtplib says it is): the rest
    of that line would be read as the next reply."""
    try:
        return conn.getreply()
    except smtplib.SMTPResponseException as exc:  # only ever smtplib's own "Line too long"
        conn.close()
        raise smtplib.SMTPServerDisconnected(f"a reply could not be read: {_reply(exc)}") from exc


# What an in-step server answers MAIL, RCPT and DATA with, besides 4xx and 5xx.
_IN_STEP = ((250,), (250, 251), (354,))


def _out_of_step(replies: list[tuple[int, bytes]]) -> bool:
    """Whether a reply cannot be the answer to its command (a repeated line,
    one with no code, 354 for RCPT): the replies have come apart from the
    commands, and RSET or another message on this connection would be read
    against the wrong reply, or go out as the body of some other reader's
    message."""
    return any(code not in expected and not 400 <= code < 600
               for (code, _), expected in zip(replies, _IN_STEP))


def _still_open(conn: smtplib.SMTP) -> None:
    if conn.sock is None:  # closed while the previous message's answer was read
        raise smtplib.SMTPServerDisconnected("the server closed the connection after the previous message")


def _terminator(data: bytes) -> bytes:
    """The final dot after the message ``data`` (CRLF line ends, dot-stuffed
    already by ``mime.build_message(stuffed=True)``, which stuffs a digest's
    shared parts once per body)."""
    return b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n"


def _envelope_from(content) -> str | None:
    """The content's VERP return path, checked like every value that reaches the wire."""
    value = getattr(content, "envelope_from", None)
    if value is None:
        return None
    if mailbox_problem(value, display_name=False):
        raise PermanentError(f"refusing the envelope sender {value!r}")
    return value


def _quietly_close(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        pass


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
