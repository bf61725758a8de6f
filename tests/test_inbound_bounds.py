"""Inbound mail is parsed once per message, however many recipients it
has, with its parts (and so its depth) bounded while it is parsed; LMTP
still answers each recipient on its own."""

from __future__ import annotations

import email.message
import socket

from sqlmodel import select

from dispatch.inbound import mailparts, receiver
from dispatch.models import DeliveryEvent, SubscriberStatus

from .test_inbound import BOUNCES, delivered, dsn, status  # noqa: F401 - the fixture

PART_BOMB = (b'From: x@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
             + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 10_000 + b"--b--\r\n")


def test_the_parser_stops_at_the_part_limit_instead_of_building_every_part(monkeypatch):
    made = []

    class Counted(email.message.Message):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(email.message, "Message", Counted)
    try:
        mailparts.parse(PART_BOMB)
    except mailparts.MailError as exc:
        assert "more than" in str(exc)
    else:
        raise AssertionError("a message of 10,000 parts was read")
    assert len(made) <= mailparts.MAX_PARTS + 2


def test_a_part_bomb_is_unreadable_not_too_large(engine, delivered):
    settings, _, _ = delivered
    inbox = receiver.build_inbox(settings, engine)
    assert inbox.deliver(PART_BOMB, recipient=BOUNCES, source="smtp").code == 554
    assert inbox.deliver(b"x" * (mailparts.MAX_MESSAGE_BYTES + 1), recipient=BOUNCES, source="smtp").code == 552


def lmtp_exchange(server, recipients: list[str], data: bytes) -> list[str]:
    """A raw LMTP conversation (smtplib reads one answer after DATA; LMTP gives one per recipient)."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        reader = sock.makefile("rb")

        def answer() -> list[str]:
            lines = []
            while True:
                line = reader.readline().decode().rstrip("\r\n")
                lines.append(line)
                if line[3:4] != "-":
                    return lines

        answer()
        for command in ["LHLO test.example", "MAIL FROM:<>", *[f"RCPT TO:<{r}>" for r in recipients], "DATA"]:
            sock.sendall(command.encode() + b"\r\n")
            assert answer()[-1][0] in "23", command
        sock.sendall(data.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        replies = [answer()[-1] for _ in recipients]
        sock.sendall(b"QUIT\r\n")
        return replies


def test_one_parse_and_one_answer_per_recipient_over_lmtp(engine, delivered, monkeypatch):
    settings, sent, _ = delivered
    gone_path, original = sent["gone@example.net"]
    full_path, _ = sent["full@example.net"]
    parsed = []
    real = mailparts.parse
    monkeypatch.setattr(mailparts, "parse", lambda data: parsed.append(1) or real(data))
    returned = email.message_from_bytes(original.as_bytes())
    del returned["Message-ID"]  # to the bare address, nothing then names a delivery
    lmtp = receiver.InboundServer(receiver.build_inbox(settings, engine), port=0, lmtp=True).start()
    try:
        replies = lmtp_exchange(lmtp, [gone_path, BOUNCES, full_path],
                                dsn(returned, recipient="gone@example.net"))
    finally:
        lmtp.stop()
    assert len(parsed) == 1
    assert [r[:3] for r in replies] == ["250", "550", "250"]  # each VERP path names its own delivery
    assert status(engine, "gone@example.net")[0] == SubscriberStatus.bounced
    from dispatch import db

    with db.session_scope(engine) as session:
        assert len(session.exec(select(DeliveryEvent)).all()) == 2  # one per VERP path


def test_a_part_bomb_over_lmtp_is_refused_for_each_recipient(engine, delivered):
    settings, sent, _ = delivered
    gone_path, _ = sent["gone@example.net"]
    lmtp = receiver.InboundServer(receiver.build_inbox(settings, engine), port=0, lmtp=True).start()
    try:
        replies = lmtp_exchange(lmtp, [gone_path, BOUNCES], PART_BOMB)
    finally:
        lmtp.stop()
    assert [r[:3] for r in replies] == ["554", "554"]
