"""Local stand-ins for a mail relay and for Slack, so dispatch runs end to
end on a machine with neither: an SMTP server (aiosmtpd) that keeps each
message as an .eml file, and an HTTP server that answers the Slack Web API
calls dispatch makes (auth.test, chat.postMessage, threaded replies with
``thread_ts``, chat.update of a message it posted) and incoming-webhook
posts, keeping each payload as JSON. It checks Block Kit limits as Slack does.

For tests, ``SlackSink.fail_next`` queues error answers (429 with
Retry-After, 500, channel_not_found, a redirect, a long body …); GET
requests (which only a client that follows a redirect makes) are answered
"ok" and listed in ``SlackSink.gets``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from dispatch.errors import InputError

_unsafe = re.compile(r"[^A-Za-z0-9._-]+")


class SinkError(InputError):
    """A sink cannot listen where it was asked to (port in use, no such address)."""


def _cannot_listen(what: str, host: str, port: int, exc: OSError) -> SinkError:
    reason = exc.strerror or str(exc)
    if "address already in use" in str(exc).lower():
        reason = "the port is already in use (another sink, or another program)"
    return SinkError(f"the {what} cannot listen on {host}:{port}: {reason.rstrip('.')}")


class MailFolderHandler:
    """aiosmtpd handler: every accepted message becomes one .eml file."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.received: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self.envelopes: list[tuple[str, str, str]] = []  # (envelope sender, recipient, Message-ID)

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        message_id = message_from_bytes(data, policy=default_policy).get("Message-ID", "") or ""
        with self._lock:
            number = next(self._counter)
            for rcpt in envelope.rcpt_tos:
                self.received.append((rcpt, message_id))
                self.envelopes.append((envelope.mail_from or "", rcpt, message_id))
        name = f"{number:06d}-{_unsafe.sub('_', envelope.rcpt_tos[0])[:60]}.eml"
        (self.folder / name).write_bytes(data)
        return "250 Message accepted for delivery"


class PasswordAuthenticator:
    def __init__(self, username: str, password: str):
        self.username, self.password = username.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == self.username
              and auth_data.password == self.password)
        # handled=False on failure, or the client is left waiting (aiosmtpd quirk).
        return AuthResult(success=ok, handled=False)


class SmtpSink:
    def __init__(self, folder: Path, *, host: str = "127.0.0.1", port: int = 0, handler=None,
                 auth: tuple[str, str] | None = None, tls_context=None, require_starttls: bool = False,
                 implicit_tls_context=None):
        self.handler = handler or MailFolderHandler(folder)
        kwargs = {}
        if auth:
            kwargs.update(authenticator=PasswordAuthenticator(*auth), auth_require_tls=tls_context is not None,
                          auth_exclude_mechanism=["CRAM-MD5"])
        else:
            kwargs.update(auth_require_tls=False)
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        if implicit_tls_context is not None:  # TLS from the first byte (port 465 style)
            kwargs.update(ssl_context=implicit_tls_context, auth_require_tls=False)
        # An explicit IPv4 host: hostname=None would bind ::1 only.
        self.controller = Controller(self.handler, hostname=host, port=port or _free_port(host), **kwargs)
        self._running = False

    @property
    def host(self) -> str:
        return self.controller.hostname

    @property
    def port(self) -> int:
        return self.controller.port

    def start(self) -> SmtpSink:
        try:
            self.controller.start()
        except OSError as exc:
            raise _cannot_listen("SMTP sink", self.host, self.port, exc) from exc
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:  # stopping twice is harmless
            self.controller.stop()
            self._running = False


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- Slack ----------------------------------------------------------------------

MAX_BLOCKS, MAX_SECTION, MAX_HEADER = 50, 3000, 150


def block_kit_problem(blocks: list) -> str | None:
    """What Slack would reject in these blocks, or None."""
    if len(blocks) > MAX_BLOCKS:
        return f"{len(blocks)} blocks (at most {MAX_BLOCKS})"
    for block in blocks:
        text = (block.get("text") or {}).get("text", "")
        limit = {"section": MAX_SECTION, "header": MAX_HEADER}.get(block.get("type"))
        if limit and len(text.encode("utf-16-le")) // 2 > limit:
            return f"a {block['type']} text of {len(text)} characters (at most {limit})"
    return None


class SlackSink:
    def __init__(self, folder: Path, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 missing_channels: tuple[str, ...] = (), archived_channels: tuple[str, ...] = ()):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.missing = set(missing_channels)
        self.archived = set(archived_channels)
        self.posts: list[dict] = []  # every accepted payload, in order (updated in place by chat.update)
        self.updates: list[dict] = []  # every chat.update accepted, in order
        self.gets: list[str] = []  # paths of GET requests
        self.requests = 0
        self._faults: deque[tuple[int, dict, dict]] = deque()
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        try:
            self.server = ThreadingHTTPServer((host, port), _handler_for(self))
        except OSError as exc:
            raise _cannot_listen("Slack sink", host, port, exc) from exc
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="slack-sink", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def webhook_url(self, name: str = "hook") -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/webhook/{name}"

    def fail_next(self, status: int = 429, *, error: str = "ratelimited", retry_after: float | None = None,
                  times: int = 1, body: str | None = None, headers: dict | None = None) -> None:
        """``body`` replaces the answer's text as it is; ``headers`` are added (e.g. Location)."""
        extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        extra.update(headers or {})
        answer = {"ok": False, "error": error} if body is None else {"ok": False, "error": error, "body": body}
        for _ in range(times):
            self._faults.append((status, answer, extra))

    def start(self) -> SlackSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # Called by the request handler.
    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict | str, dict]:
        with self._lock:
            self.requests += 1
            if self._faults:
                status, answer, headers = self._faults.popleft()
                if "body" in answer:
                    return status, answer["body"], headers
                # Webhooks answer in plain text ("no_service"), the Web API in JSON.
                return status, answer["error"] if path.startswith("/webhook/") else answer, headers
        payload = _read_payload(headers, body)
        if path.startswith("/webhook/"):
            problem = block_kit_problem(payload.get("blocks", []))
            if problem:
                return 400, "invalid_blocks", {}
            return 200, self._store(path.rsplit("/", 1)[1], payload, "webhook"), {}
        if self.token and headers.get("Authorization", "") != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if path == "/api/auth.test":
            return 200, {"ok": True, "team": "local sink", "user": "dispatch"}, {}
        if path not in ("/api/chat.postMessage", "/api/chat.update"):
            return 200, {"ok": False, "error": "unknown_method"}, {}
        channel = payload.get("channel", "")
        if channel in self.missing:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if channel in self.archived:
            return 200, {"ok": False, "error": "is_archived"}, {}
        if not payload.get("text") and not payload.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}, {}
        if block_kit_problem(payload.get("blocks", [])):
            return 200, {"ok": False, "error": "invalid_blocks"}, {}
        if path == "/api/chat.update":
            return 200, self._update(channel, str(payload.get("ts", "")), payload), {}
        if payload.get("thread_ts") and self._find(channel, str(payload["thread_ts"])) is None:
            return 200, {"ok": False, "error": "thread_not_found"}, {}
        ts = self._store(channel, payload, "api")
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": payload.get("text")}}, {}

    def _find(self, channel: str, ts: str) -> dict | None:
        with self._lock:
            return next((p for p in self.posts if p["via"] == "api" and p["channel"] == channel and p["ts"] == ts),
                        None)

    def _update(self, channel: str, ts: str, payload: dict) -> dict:
        """chat.update: the message posted at ``ts`` in ``channel`` takes the
        new text and blocks (as Slack shows it); each update is listed in ``updates``."""
        post = self._find(channel, ts)
        if post is None:
            return {"ok": False, "error": "message_not_found"}
        with self._lock:
            self.updates.append({"channel": channel, "ts": ts, **payload})
            post.update({key: payload[key] for key in ("text", "blocks") if key in payload}, edited=True)
            shown = {key: value for key, value in post.items() if key not in ("channel", "ts", "via")}
        # The message's file holds what the channel now shows, as Slack does.
        (self.folder / _unsafe.sub("_", channel) / f"{ts}.json").write_text(
            json.dumps(shown, indent=2, ensure_ascii=False), "utf-8")
        return {"ok": True, "channel": channel, "ts": ts, "text": payload.get("text")}

    def _store(self, channel: str, payload: dict, via: str) -> str:
        with self._lock:
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            self.posts.append({"channel": channel, "ts": ts, "via": via, **payload})
        folder = self.folder / _unsafe.sub("_", channel)
        folder.mkdir(exist_ok=True)
        (folder / f"{ts}.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False), "utf-8")
        return ts if via == "api" else "ok"


def _read_payload(headers, body: bytes) -> dict:
    if "json" in headers.get("Content-Type", ""):
        return json.loads(body or b"{}")
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
    if "blocks" in form:
        form["blocks"] = json.loads(form["blocks"])
    return form


def _handler_for(sink: SlackSink):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            self._reply(*sink.answer(self.path.split("?")[0], self.headers, body))

        def do_GET(self):
            with sink._lock:
                sink.gets.append(self.path)
            self._reply(200, "ok", {})

        def _reply(self, status: int, answer, extra: dict):
            data = (json.dumps(answer) if isinstance(answer, dict) else answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(answer, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep test and demo output clean
            pass

    return Handler


# --- a bounce, as a relay sends one later -------------------------------------------

def bounce_message(original: bytes, *, recipient: str) -> bytes:
    """An RFC 3464 DSN (5.1.1, no such user) returning ``original``, as Postfix writes one."""
    from email.message import Message
    from email.mime.message import MIMEMessage
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.policy import compat32
    from email.utils import make_msgid

    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@sink.localhost (Mail Delivery System)"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = make_msgid(domain="sink.localhost")
    report.attach(MIMEText(f"<{recipient}>: 550 5.1.1 no such user (the local sink's bounce)\n"))
    status = Message()
    status.set_type("message/delivery-status")
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; sink.localhost"
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = "5.1.1"
    per_recipient["Diagnostic-Code"] = "smtp; 550 5.1.1 no such user"
    status.set_payload([per_message, per_recipient])
    report.attach(status)
    report.attach(MIMEMessage(message_from_bytes(original, policy=compat32)))
    return report.as_bytes(policy=compat32.clone(linesep="\r\n"))


class BouncingHandler(MailFolderHandler):
    """Keeps every message, and answers mail for ``bounce_for`` with a DSN
    sent to its envelope sender through ``relay`` (host, port) a moment
    later, in a thread: the bounce arrives after acceptance, as in life."""

    def __init__(self, folder: Path, *, bounce_for: str, relay: tuple[str, int]):
        super().__init__(folder)
        self.bounce_for = bounce_for.lower()
        self.relay = relay
        self.threads: list[threading.Thread] = []

    async def handle_DATA(self, server, session, envelope):
        answer = await super().handle_DATA(server, session, envelope)
        if envelope.mail_from and self.bounce_for in (r.lower() for r in envelope.rcpt_tos):
            data = bounce_message(envelope.original_content or envelope.content, recipient=self.bounce_for)
            thread = threading.Thread(target=self._send, args=(envelope.mail_from, data), daemon=True)
            self.threads.append(thread)
            thread.start()
        return answer

    def _send(self, to: str, data: bytes) -> None:
        import smtplib

        with smtplib.SMTP(*self.relay, timeout=10) as client:
            client.sendmail("", [to], data)

    def wait(self, timeout: float = 10) -> None:
        for thread in self.threads:
            thread.join(timeout)
