"""Confirmation notices keep the promises digests keep: a slow relay does not
hand a claimed notice to a second process that sends it again, and an
outcome that cannot be written is held, not sent twice after a reclaim."""

import email
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import OperationalError
from sqlmodel import select

from dispatch import db, leases, ledger, notices, recording
from dispatch.adapters.smtp import SmtpAdapter
from dispatch.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from dispatch.render import build_environment
from dispatch.retry import RetryPolicy

ADDRESSES = ["ana@example.org", "ben@example.org", "cy@example.org"]


class Clock:
    def __init__(self):
        self.now = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now


class SlowRelay:
    """Each send takes eight minutes on the test's clock (in steps, so a lease
    keeper can renew meanwhile); during the first, ``meanwhile`` runs — another
    process reclaiming what has expired and sending it."""

    def __init__(self, inner, clock, meanwhile):
        self.inner, self.clock, self.meanwhile, self.calls = inner, clock, meanwhile, 0

    def send(self, *args, **kwargs):
        self.calls += 1
        for _ in range(2):
            self.clock.now += timedelta(minutes=4)
            time.sleep(0.3)  # the keeper (every 0.02 s) renews at the new time
        if self.calls == 1:
            self.meanwhile()
        return self.inner.send(*args, **kwargs)


def _planned(engine, clock):
    with db.session_scope(engine) as session:
        for address in ADDRESSES:
            session.add(Subscriber(address=address, status=SubscriberStatus.pending))
    with db.session_scope(engine) as session:
        ids = [s.id for s in session.exec(select(Subscriber)).all()]
    for subscriber_id in ids:
        assert notices.plan(engine, subscriber_id, kind="confirm", now=clock.now) is not None


def _sender(engine, clock, mailer):
    return notices.NoticeSender(engine, environment=build_environment(), brand="Desk", public_url="https://news.example.org/",
                                secret="k", mailer=mailer, policy=RetryPolicy(max_attempts=3), clock=clock)


def _mails(folder):
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


def _mailer(mail_sink):
    return SmtpAdapter(host="127.0.0.1", port=mail_sink.port, mail_from="Desk <news@example.org>")


def test_a_slow_relay_does_not_hand_notices_to_a_second_process(engine, mail_sink, tmp_path):
    clock = Clock()
    _planned(engine, clock)
    other = _sender(engine, clock, _mailer(mail_sink))

    def second_process():
        with db.session_scope(engine) as session:
            ledger.reclaim_expired(session, now=clock.now)
        other.drain()

    first = _sender(engine, clock, SlowRelay(_mailer(mail_sink), clock, second_process))
    with leases.LeaseKeeper(engine, lease=first.lease, clock=clock, every=0.02) as keeper:
        first.drain(keeper=keeper)
    other.drain()
    assert sorted(m["To"] for m in _mails(tmp_path / "mail")) == ADDRESSES  # once each
    with db.session_scope(engine) as session:
        assert {d.status for d in session.exec(select(Delivery)).all()} == {DeliveryStatus.sent}


def test_a_notice_whose_outcome_cannot_be_written_is_held_not_sent_again(engine, mail_sink, tmp_path, monkeypatch):
    clock = Clock()
    _planned(engine, clock)
    real_record, broken = ledger.record, {"on": True}

    def record(session, finishes):
        if broken["on"]:
            raise OperationalError("UPDATE delivery", {}, Exception("the database went away"))
        return real_record(session, finishes)

    monkeypatch.setattr(ledger, "record", record)
    monkeypatch.setattr(recording.time, "sleep", lambda seconds: None)
    sender = _sender(engine, clock, _mailer(mail_sink))
    sender.drain()  # sends, cannot record: must not raise, must not leave the rows to a reclaim
    broken["on"] = False
    assert sorted(m["To"] for m in _mails(tmp_path / "mail")) == ADDRESSES
    clock.now += timedelta(minutes=30)  # past any lease
    with db.session_scope(engine) as session:
        ledger.reclaim_expired(session, now=clock.now)
    sender.drain()
    assert len(_mails(tmp_path / "mail")) == len(ADDRESSES)  # held, not sent twice
    with db.session_scope(engine) as session:
        assert ledger.held_ids(session)[0] == len(ADDRESSES)
