"""`dispatch inbound` bounds every connection (real smtplib clients and raw
sockets against the aiosmtpd server): each command's budget, an idle
timeout, a lifetime, the connections at once and the message size; what is
cut off is told 421 (an MTA tries again later), and a DSN still arrives
the usual way, several over one connection too."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest
from sqlmodel import select

from dispatch import db
from dispatch.inbound import mailparts, receiver
from dispatch.models import DeliveryEvent, SubscriberStatus

from .test_inbound import delivered, dsn, status  # noqa: F401 - the fixture

WAIT = 10  # seconds a test waits at most for the server to do what it must


def _server(engine, delivered, **limits):  # noqa: F811
    settings, _, _ = delivered
    server = receiver.InboundServer(receiver.build_inbox(settings, engine), port=0,
                                    limits=receiver.Limits(**limits)).start()
    _settle(server, 0)  # the controller's own start-up connection, once it is gone
    return server


def _settle(server, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while server.open_connections != count:
        assert time.monotonic() < deadline, f"{server.open_connections} connections open, not {count}"
        time.sleep(0.01)


def _connect(server) -> tuple[socket.socket, str]:
    sock = socket.create_connection((server.host, server.port), timeout=WAIT)
    return sock, sock.makefile("rb").readline().decode()


def _closed(sock: socket.socket) -> bytes:
    """Everything the server still says, until it closes the connection."""
    said = b""
    while chunk := sock.recv(4096):
        said += chunk
    return said


def test_a_repeated_command_runs_out_of_budget_and_the_connection_ends(engine, delivered):  # noqa: F811
    _, sent, server = delivered  # the defaults
    client = smtplib.SMTP(server.host, server.port, timeout=WAIT)
    for _ in range(receiver.COMMAND_BUDGET["*"]):
        assert client.noop()[0] == 250
    code, message = client.noop()
    assert code == 421 and b"NOOP sent too many times" in message
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    # RSET has a budget of its own, a message's worth each, and runs out too.
    client = smtplib.SMTP(server.host, server.port, timeout=WAIT)
    for _ in range(receiver.MESSAGES_PER_CONNECTION):
        assert client.rset()[0] == 250
    assert client.rset()[0] == 421
    client.close()


def test_several_dsns_over_one_connection_still_arrive(engine, delivered):  # noqa: F811
    _, sent, server = delivered
    client = smtplib.SMTP(server.host, server.port, timeout=WAIT)
    try:
        for reader in ("gone@example.net", "full@example.net"):
            mail_from, original = sent[reader]
            client.sendmail("", [mail_from], dsn(original, recipient=reader))
            client.rset()
    finally:
        client.quit()
    assert status(engine, "gone@example.net")[0] == SubscriberStatus.bounced
    assert status(engine, "full@example.net")[0] == SubscriberStatus.bounced


def test_one_connection_too_many_is_told_421_and_a_freed_one_is_used_again(engine, delivered):  # noqa: F811
    _, sent, _ = delivered
    server = _server(engine, delivered, connections=2)
    try:
        held = [_connect(server) for _ in range(2)]
        assert [greeting[:3] for _, greeting in held] == ["220", "220"]
        extra, greeting = _connect(server)
        assert greeting.startswith("421 4.3.2 too many connections")
        assert _closed(extra) == b""
        with pytest.raises(smtplib.SMTPConnectError):
            smtplib.SMTP(server.host, server.port, timeout=WAIT)
        held[0][0].close()
        _settle(server, 1)
        mail_from, original = sent["gone@example.net"]
        client = smtplib.SMTP(server.host, server.port, timeout=WAIT)
        client.sendmail("", [mail_from], dsn(original, recipient="gone@example.net"))
        client.quit()
        assert status(engine, "gone@example.net")[0] == SubscriberStatus.bounced
        held[1][0].close()
        _settle(server, 0)
    finally:
        server.stop()


def test_a_silent_client_is_closed_after_the_idle_timeout(engine, delivered):  # noqa: F811
    server = _server(engine, delivered, idle_seconds=0.3)
    try:
        sock, greeting = _connect(server)
        assert greeting.startswith("220")
        sock.sendall(b"\r\n")  # a line it refuses does not keep the connection
        assert _closed(sock).startswith(b"500")
        _settle(server, 0)
    finally:
        server.stop()


def test_a_busy_client_is_closed_at_the_end_of_its_lifetime(engine, delivered):  # noqa: F811
    server = _server(engine, delivered, lifetime_seconds=0.5, commands={"*": 10_000})
    try:
        client = smtplib.SMTP(server.host, server.port, timeout=WAIT)
        answers = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                answers.append(client.noop()[0])
            except smtplib.SMTPServerDisconnected:
                break
            time.sleep(0.02)
        assert answers[0] == 250 and answers[-1] == 421, answers[-3:]  # the notice came in place of an answer
        _settle(server, 0)
    finally:
        server.stop()


def test_a_message_over_the_size_limit_is_refused_and_the_connection_goes_on(engine, delivered):  # noqa: F811
    _, sent, server = delivered
    mail_from, original = sent["gone@example.net"]
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (mailparts.MAX_MESSAGE_BYTES // 1000 + 1)
    client = smtplib.SMTP(server.host, server.port, timeout=WAIT)
    try:
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # ESMTP: its SIZE is refused at MAIL
            client.sendmail("", [mail_from], big)
        assert declared.value.smtp_code == 552
    finally:
        client.quit()
    client = smtplib.SMTP(server.host, server.port, timeout=WAIT)
    try:
        client.helo("old.example.net")  # no SIZE said: it is counted while it streams
        with pytest.raises(smtplib.SMTPDataError) as streamed:
            client.sendmail("", [mail_from], big)
        assert streamed.value.smtp_code == 552
        client.rset()
        client.sendmail("", [mail_from], dsn(original, recipient="gone@example.net"))
    finally:
        client.quit()
    with db.session_scope(engine) as session:
        assert [e.kind for e in session.exec(select(DeliveryEvent)).all()] == ["hard_bounce"]


def test_the_command_names_its_connection_limit(run):
    shown = run("inbound", "--help")
    assert shown.exit_code == 0 and "--max-connections" in shown.output
    assert f"default: {receiver.Limits().connections};" in " ".join(shown.output.split())  # one default
    refused = run("inbound", "--max-connections", "0")
    assert refused.exit_code == 2
