"""The SMTP adapter against a real aiosmtpd server on loopback."""

import email
import email.policy
import smtplib
import socket

import pytest

from dispatch.adapters.smtp import SmtpAdapter
from dispatch.config import SmtpSecurity
from dispatch.errors import PermanentError, TransientError
from dispatch.render import EmailContent

from .servers import ScriptedHandler, scripted_smtp, tls_files

CONTENT = EmailContent(subject="Ports reopen", text="Ships are moving.\n", html="<p>Ships are moving.</p>",
                       preferences_url="https://x.example/preferences/t", unsubscribe_url="https://x.example/unsubscribe/t")


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def server(tmp_path, request):
    sink, handler = scripted_smtp(tmp_path / "mail", pipelining=request.param)
    yield sink, handler
    sink.stop()


@pytest.fixture
def pipelining_server(tmp_path):
    sink, handler = scripted_smtp(tmp_path / "mail", pipelining=True)
    yield sink, handler
    sink.stop()


def adapter_for(sink, **kwargs):
    options = dict(host=sink.host, port=sink.port, mail_from="Briefings <news@example.org>", timeout=5)
    options.update(kwargs)
    return SmtpAdapter(**options)


def received(handler):
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(handler.folder.glob("*.eml"))]


def test_messages_go_over_one_persistent_connection(server):
    sink, handler = server
    adapter = adapter_for(sink)
    receipts = [adapter.send(f"r{n}@example.org", CONTENT, delivery_id=n) for n in range(1, 21)]
    adapter.close()
    assert receipts == [f"<delivery-{n}@example.org>" for n in range(1, 21)]
    assert handler.connections == 1
    messages = received(handler)
    assert [m["Message-ID"] for m in messages] == receipts
    assert messages[0]["From"] == "Briefings <news@example.org>"
    assert messages[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_implicit_tls_with_auth(tmp_path):
    context, ca_file = tls_files(tmp_path)
    sink, handler = scripted_smtp(tmp_path / "mail", auth=("dispatch", "s3cret"), implicit_tls_context=context)
    try:
        adapter = adapter_for(sink, security=SmtpSecurity.ssl, username="dispatch", password="s3cret",
                              ca_file=ca_file)
        adapter.send("r@example.org", CONTENT, delivery_id=1)
        adapter.close()
    finally:
        sink.stop()
    assert [m["To"] for m in received(handler)] == ["r@example.org"]


def test_starttls_and_auth(tmp_path):
    context, ca_file = tls_files(tmp_path)
    sink, handler = scripted_smtp(tmp_path / "mail", auth=("dispatch", "s3cret"), tls_context=context,
                                  require_starttls=True)
    try:
        good = adapter_for(sink, security=SmtpSecurity.starttls, username="dispatch", password="s3cret",
                           ca_file=ca_file)
        assert good.send("r@example.org", CONTENT, delivery_id=1) == "<delivery-1@example.org>"
        good.close()
        assert len(received(handler)) == 1
        bad = adapter_for(sink, security=SmtpSecurity.starttls, username="dispatch", password="wrong",
                          ca_file=ca_file)
        with pytest.raises(TransientError, match="login .* refused: 535"):
            bad.send("r@example.org", CONTENT, delivery_id=2)
        untrusted = adapter_for(sink, security=SmtpSecurity.starttls, username="dispatch", password="s3cret")
        with pytest.raises(TransientError, match="cannot connect.*CERTIFICATE_VERIFY_FAILED"):
            untrusted.send("r@example.org", CONTENT, delivery_id=3)
        plain = adapter_for(sink)  # the server requires STARTTLS first
        with pytest.raises(TransientError):
            plain.send("r@example.org", CONTENT, delivery_id=4)
    finally:
        sink.stop()
    assert len(received(handler)) == 1


def test_server_down_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    adapter = SmtpAdapter(host="127.0.0.1", port=port, mail_from="news@example.org", timeout=2)
    with pytest.raises(TransientError, match="cannot connect to SMTP server 127.0.0.1:.*refused"):
        adapter.send("r@example.org", CONTENT, delivery_id=1)


def test_refused_recipient_is_permanent_and_blames_the_address(server):
    sink, handler = server
    handler.refuse["gone@example.org"] = "550 5.1.1 <gone@example.org>: no such user"
    handler.refuse["full@example.org"] = "452 4.2.2 mailbox full"
    adapter = adapter_for(sink)
    with pytest.raises(PermanentError) as caught:
        adapter.send("gone@example.org", CONTENT, delivery_id=1)
    assert caught.value.blames_recipient and "550" in str(caught.value)
    with pytest.raises(TransientError, match="452"):
        adapter.send("full@example.org", CONTENT, delivery_id=2)
    # The connection survives refusals and carries on.
    adapter.send("ok@example.org", CONTENT, delivery_id=3)
    assert handler.connections == 1 and len(received(handler)) == 1


def test_a_pipelined_messages_data_goes_in_one_write_with_the_next_messages_commands(pipelining_server,
                                                                                      monkeypatch):
    sink, handler = pipelining_server
    writes = []
    original = smtplib.SMTP.send

    def send(self, data):
        if isinstance(data, bytes):  # smtplib's own commands (EHLO) go as text
            writes.append(data)
        return original(self, data)

    monkeypatch.setattr(smtplib.SMTP, "send", send)
    adapter = adapter_for(sink)
    first = adapter.send_later("a@example.org", CONTENT, delivery_id=1)
    commands = [w for w in writes if b"MAIL FROM" in w]
    assert len(commands) == 1 and not any(b"Message-ID: <delivery-1@" in w for w in writes)  # held back
    adapter.send_later("b@example.org", CONTENT, delivery_id=2)
    together = writes[-1]  # the first message's data and final dot, then the second's MAIL, RCPT, DATA
    assert together.startswith(b"From: ") and b"Message-ID: <delivery-1@" in together
    assert together.endswith(b"\r\n.\r\nMAIL FROM:<news@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\n"
                             b"DATA\r\n")
    assert first.result() == "<delivery-1@example.org>"
    adapter.close()
    assert [m["Message-ID"] for m in received(handler)] == ["<delivery-1@example.org>", "<delivery-2@example.org>"]


@pytest.mark.parametrize("reply, error", [
    ("451 4.3.0 try again later", TransientError),
    ("421 4.3.2 shutting down", TransientError),
    ("554 5.7.1 message refused", PermanentError),
    (ScriptedHandler.DROP, TransientError),
])
def test_answers_at_end_of_data(server, reply, error):
    sink, handler = server
    handler.data_replies.append(reply)
    adapter = adapter_for(sink)
    with pytest.raises(error) as caught:
        adapter.send("r@example.org", CONTENT, delivery_id=1)
    if error is PermanentError:
        assert not caught.value.blames_recipient
    # Whatever happened, the next message goes through (reconnecting if needed).
    adapter.send("r@example.org", CONTENT, delivery_id=2)
    assert [m["Message-ID"] for m in received(handler)] == ["<delivery-2@example.org>"]


# --- across messages (PIPELINING): a message's data answer is read with the next one's replies

def test_a_pipelined_answer_is_read_with_the_next_message(pipelining_server):
    sink, handler = pipelining_server
    adapter = adapter_for(sink)
    first = adapter.send_later("a@example.org", CONTENT, delivery_id=1)
    assert not first.settled  # nothing of the answer has been read yet
    assert received(handler) == []  # its data and final dot go with the next message's commands
    second = adapter.send_later("b@example.org", CONTENT, delivery_id=2)
    assert first.settled and not second.settled  # read before the second message's replies
    assert [m["Message-ID"] for m in received(handler)] == ["<delivery-1@example.org>"]
    assert first.result() == "<delivery-1@example.org>"
    assert second.result() == "<delivery-2@example.org>"  # read now, on its own
    adapter.close()
    assert [m["Message-ID"] for m in received(handler)] == ["<delivery-1@example.org>", "<delivery-2@example.org>"]
    assert handler.connections == 1


@pytest.mark.parametrize("reply, error", [
    ("451 4.3.0 try again later", TransientError),
    ("554 5.7.1 message refused", PermanentError),
])
def test_a_refused_data_is_that_messages_outcome_not_the_next_ones(pipelining_server, reply, error):
    sink, handler = pipelining_server
    handler.data_replies.append(reply)
    adapter = adapter_for(sink)
    refused = adapter.send_later("a@example.org", CONTENT, delivery_id=1)
    accepted = adapter.send_later("b@example.org", CONTENT, delivery_id=2)
    with pytest.raises(error, match=reply.split()[0]):
        refused.result()
    with pytest.raises(error):  # the answer is kept: asking again says the same
        refused.result()
    assert accepted.result() == "<delivery-2@example.org>"
    adapter.close()
    assert [m["Message-ID"] for m in received(handler)] == ["<delivery-2@example.org>"]
    assert handler.connections == 1  # the transaction ended with the dot: the connection carries on


@pytest.mark.parametrize("reply", [ScriptedHandler.DROP, "421 4.3.2 shutting down"])
def test_a_connection_lost_after_a_pipelined_message(pipelining_server, reply):
    sink, handler = pipelining_server
    handler.data_replies.append(reply)
    adapter = adapter_for(sink)
    lost = adapter.send_later("a@example.org", CONTENT, delivery_id=1)
    # The next message's commands went out on a connection the server closed:
    # it was not sent, and says so; the one before may or may not have arrived.
    with pytest.raises(TransientError):
        adapter.send_later("b@example.org", CONTENT, delivery_id=2).result()
    with pytest.raises(TransientError):
        lost.result()
    assert adapter.send("c@example.org", CONTENT, delivery_id=3) == "<delivery-3@example.org>"  # a new connection
    adapter.close()
    assert [m["Message-ID"] for m in received(handler)] == ["<delivery-3@example.org>"]
    assert handler.connections == 2


def test_a_refused_recipient_after_a_pipelined_message(pipelining_server):
    sink, handler = pipelining_server
    handler.refuse["gone@example.org"] = "550 5.1.1 no such user"
    adapter = adapter_for(sink)
    before = adapter.send_later("a@example.org", CONTENT, delivery_id=1)
    with pytest.raises(PermanentError) as caught:
        adapter.send_later("gone@example.org", CONTENT, delivery_id=2)
    assert caught.value.blames_recipient
    assert before.settled and before.result() == "<delivery-1@example.org>"
    assert adapter.send("c@example.org", CONTENT, delivery_id=3) == "<delivery-3@example.org>"
    adapter.close()
    assert [m["Message-ID"] for m in received(handler)] == ["<delivery-1@example.org>", "<delivery-3@example.org>"]
    assert handler.connections == 1


def test_closing_and_idle_checks_read_what_a_connection_owes_first(pipelining_server, monkeypatch):
    from dispatch.adapters import smtp

    sink, handler = pipelining_server
    adapter = adapter_for(sink)
    owed = adapter.send_later("a@example.org", CONTENT, delivery_id=1)
    monkeypatch.setattr(smtp, "IDLE_CHECK_SECONDS", 0)  # the next use checks the connection with NOOP
    again = adapter.send_later("b@example.org", CONTENT, delivery_id=2)
    assert owed.result() == "<delivery-1@example.org>"
    adapter.close()  # settles the second message's answer before QUIT
    assert again.settled and again.result() == "<delivery-2@example.org>"
    assert len(received(handler)) == 2 and handler.connections == 1


def test_receipts_settle_from_another_thread_while_messages_go_out(pipelining_server):
    """Recording reads an answer while other threads send on the pool: every
    receipt gets its own message's answer, whichever thread read it."""
    import threading

    sink, handler = pipelining_server
    for n in range(0, 60, 7):
        handler.refuse[f"r{n}@example.org"] = "550 5.1.1 no such user"
    adapter = adapter_for(sink, pool_size=2)
    receipts, errors = {}, {}

    def send(numbers):
        for n in numbers:
            try:
                receipts[n] = adapter.send_later(f"r{n}@example.org", CONTENT, delivery_id=n)
            except PermanentError as exc:
                errors[n] = exc

    threads = [threading.Thread(target=send, args=(range(k, 60, 3),)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(errors) == list(range(0, 60, 7))
    assert {n: r.result() for n, r in receipts.items()} == {n: f"<delivery-{n}@example.org>" for n in receipts}
    assert handler.connections <= 2 and adapter.connections_in_use == 0  # three threads, a pool of two
    adapter.close()
    assert sorted(m["Message-ID"] for m in received(handler)) == sorted(r.msg_id for r in receipts.values())


def test_rate_limit_spaces_messages(server):
    import time
    sink, handler = server
    adapter = adapter_for(sink, rate_limit=20)
    started = time.monotonic()
    for n in range(6):
        adapter.send("r@example.org", CONTENT, delivery_id=n)
    assert time.monotonic() - started >= 5 / 20


@pytest.mark.parametrize("kwargs, message", [
    (dict(mail_from="not an address"), "mail_from"),
    (dict(mail_from="x@example.org", username="u"), "both smtp_username and smtp_password"),
    (dict(mail_from="x@example.org", ca_file="/no/such/ca.pem"), "does not exist"),
])
def test_bad_settings_fail_at_start(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SmtpAdapter(host="127.0.0.1", port=25, **kwargs)


DOTTY = EmailContent(
    subject="Dots", text="Line one\n.starts with a dot\n..two dots\n.\nend — ünïcödé ✓\n",
    html="<p>ok</p>\n." + "<b>long</b> " * 400 + "\n", preferences_url="https://x.example/p/t",
    unsubscribe_url="https://x.example/u/t")


def test_leading_dots_8bit_text_and_long_lines_arrive_intact(server):
    sink, handler = server
    adapter = adapter_for(sink)
    adapter.send("r@example.org", DOTTY, delivery_id=1)
    (msg,) = received(handler)
    text, html = msg.get_payload()
    assert text["Content-Transfer-Encoding"] == "8bit"  # aiosmtpd offers 8BITMIME
    assert html["Content-Transfer-Encoding"] == "quoted-printable"  # a 4,800-byte line does not fit 8bit
    assert text.get_content().replace("\r\n", "\n") == DOTTY.text
    assert html.get_content().replace("\r\n", "\n") == DOTTY.html


def _outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_auth_without_tls_is_refused_unless_the_relay_is_on_loopback_or_allowed(tmp_path):
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no non-loopback address to put a relay on")
    sink, handler = scripted_smtp(tmp_path / "mail", host=outward, auth=("dispatch", "s3cret"))
    try:
        options = dict(host=outward, port=sink.port, mail_from="news@example.org", timeout=5,
                       username="dispatch", password="s3cret")
        with pytest.raises(ValueError, match="unencrypted") as caught:
            SmtpAdapter(**options)  # refused before any connection is made
        assert "s3cret" not in str(caught.value) and handler.connections == 0
        allowed = SmtpAdapter(**options, allow_plaintext_auth=True)  # the operator trusts this network
        allowed.send("r@example.org", CONTENT, delivery_id=1)
        allowed.close()
        assert len(received(handler)) == 1
    finally:
        sink.stop()
    loopback, _ = scripted_smtp(tmp_path / "mail2", auth=("dispatch", "s3cret"))
    try:  # a relay on this machine: nothing crosses a network
        local = SmtpAdapter(host=loopback.host, port=loopback.port, mail_from="news@example.org", timeout=5,
                            username="dispatch", password="s3cret")
        local.send("r@example.org", CONTENT, delivery_id=1)
        local.close()
    finally:
        loopback.stop()


def test_plaintext_auth_to_a_remote_relay_is_one_line_at_start(run, monkeypatch):
    monkeypatch.setenv("DISPATCH_SMTP_HOST", "relay.example.org")
    monkeypatch.setenv("DISPATCH_SMTP_USERNAME", "dispatch")
    monkeypatch.setenv("DISPATCH_SMTP_PASSWORD", "s3cret")
    result = run("run", "--once")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "smtp_username" in result.stderr
    assert "DISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH" in result.stderr and "s3cret" not in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("kwargs, message", [
    (dict(mail_from="news@example.org\r\nBcc: x@example.org"), "mail_from"),
    (dict(mail_from="news@example.org", reply_to="desk@example.org\nBcc: x@example.org"), "reply_to"),
    (dict(mail_from="news@example.org", list_id="<l.example.org>\r\nBcc: x@example.org"), "list_id"),
    (dict(mail_from="news@example.org", unsubscribe_mailto="u@example.org\r\nBcc: x@example.org"),
     "unsubscribe_mailto"),
])
def test_header_values_with_line_breaks_are_refused_by_the_adapter_too(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SmtpAdapter(host="127.0.0.1", port=25, **kwargs)
