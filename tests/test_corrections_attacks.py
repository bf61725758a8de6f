"""Attacks on corrections and retractions from outside (helper outsider2):
the two-person rule through a replaced correction, and notices only to
readers who really received the SITREP."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st
from sqlmodel import select

from dispatch import db, revisions, sitreps, subscribers
from dispatch.desk import roles
from dispatch.models import Delivery, SubscriberKind
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .test_corrections import (  # noqa: F401 (fixtures)
    APPROVED, CORRECTED, NOTE, STANDARD, clock, delivered_once, desk, mails, runner, slack, smtp, smtp_server,
)


def test_a_correction_replaced_by_a_colleague_is_not_approved_by_its_first_author(engine, desk):
    # ana writes the correction; bob replaces it with a one-character change of hers; ana may not
    # approve it then: most of the text is hers (as for SITREPs, every author since the last approval counts).
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ana", note=NOTE)
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED.replace("fourteen", "Fourteen")), by="bob", note=NOTE)
    for approver in ("ana", " ANA ", "bob"):
        with db.session_scope(engine) as session, pytest.raises(roles.NotPermitted, match="two-person rule"):
            revisions.approve_correction(session, desk, by=approver, two_person=True)
    with db.session_scope(engine) as session:
        assert revisions.approve_correction(session, desk, by="chief", two_person=True).revision.number == 2
    # The next correction starts afresh: ana's earlier authorship was reviewed by chief's approval.
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED.replace("fourteen", "fifteen")), by="bob", note=NOTE)
    with db.session_scope(engine) as session:
        assert revisions.approve_correction(session, desk, by="ana", two_person=True).revision.number == 3


OTHER = STANDARD.replace("Port Strike Halts Grain Shipments from Odesa", "Ferries Resume in the Baltic")


def test_a_retraction_is_not_sent_to_a_reader_whose_digest_went_out_without_it(engine, runner, clock, smtp):
    # Planned into a daily digest, withdrawn before the digest was sent: the digest went out with the
    # other SITREP only, so a later retraction (allowed: other readers had it) is no news to this reader.
    with db.session_scope(engine) as session:
        ids = [sitreps.import_parsed(session, parse(text), actor="ed").sitrep.id for text in (STANDARD, OTHER)]
        s = subscribers.add_subscriber(session, "daily@example.org", kind=SubscriberKind.email,
                                       prefs=Preferences(cadence="daily", send_at="07:00", timezone="UTC"))
        s.created_at = APPROVED - timedelta(days=3)
        for sitrep_id in ids:
            sitreps.approve_sitrep(session, sitrep_id, by="chief", at=APPROVED)
    clock.now = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    runner.plan()
    with db.session_scope(engine) as session:
        (planned,) = session.exec(select(Delivery)).all()
        assert sorted(planned.sitrep_ids) == sorted(ids)
        sitreps.withdraw_sitrep(session, ids[0], by="chief", reason="checking")
    runner.run_once()
    (digest_mail,) = mails(smtp)
    assert "Ferries Resume" in digest_mail["Subject"] + digest_mail.get_body(("plain",)).get_content()
    assert "Port Strike" not in digest_mail.get_body(("plain",)).get_content()
    with db.session_scope(engine) as session:
        assert revisions.retract(session, ids[0], by="chief", reason="It was false.", now=clock.now).notices == 0
        # The other SITREP did reach them: its retraction does.
        assert revisions.retract(session, ids[1], by="chief", reason="No ferries ran.", now=clock.now).notices == 1


class _SlowRelay:
    """The email channel of a slow relay: each send takes ``minutes`` on
    the test's clock (in steps, so the lease keeper can renew meanwhile);
    at the first, another `dispatch run` reclaims what has expired and sends."""

    def __init__(self, inner, clock, *, minutes: int, meanwhile):
        self.inner, self.clock, self.minutes, self.meanwhile = inner, clock, minutes, meanwhile
        self.calls = 0

    def send(self, *args, **kwargs):
        self.calls += 1
        for _ in range(self.minutes // 4):
            self.clock.now += timedelta(minutes=4)
            time.sleep(0.5)  # the keeper (every 0.02 s) renews at the new time
        if self.calls == 1:
            self.meanwhile()
        return self.inner.send(*args, **kwargs)


def _notice_sender(runner, channels):
    from dispatch.revision_notices import RevisionNoticeSender

    r = runner.revisions
    return RevisionNoticeSender(r.engine, composer=r.composer, channels=channels, policy=r.policy, clock=r.clock)


def _corrected(engine, desk, clock):
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ed", note=NOTE)
        revisions.approve_correction(session, desk, by="chief", now=clock.now)
    clock.now += timedelta(minutes=1)


def test_a_slow_relay_does_not_hand_notices_to_a_second_run_that_sends_them_again(
        engine, runner, clock, slack, smtp, desk):
    from dispatch import leases, ledger

    delivered_once(runner, clock, slack, smtp, engine)
    before = len(mails(smtp))
    _corrected(engine, desk, clock)
    other = _notice_sender(runner, runner.channels)

    def second_run():  # another `dispatch run`: its planner reclaims expired leases, its sender drains
        with db.session_scope(engine) as session:
            ledger.reclaim_expired(session, now=clock.now)
        other.drain()

    slow = _SlowRelay(runner.channels["email"], clock, minutes=8, meanwhile=second_run)
    first = _notice_sender(runner, {**runner.channels, "email": slow})
    with leases.LeaseKeeper(engine, lease=first.lease, clock=clock, every=0.02) as keeper:
        first.drain(keeper=keeper)
    other.drain()
    notices = [m["To"] for m in mails(smtp)[before:]]
    assert sorted(notices) == ["html@example.org", "leaving@example.org", "text@example.org"]  # once each
    assert len(slack.updates) == 1 and len([p for p in slack.posts if p.get("thread_ts")]) == 1


def test_a_notice_whose_outcome_cannot_be_written_is_held_not_sent_again(
        engine, runner, clock, slack, smtp, desk, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from dispatch import ledger, recording

    delivered_once(runner, clock, slack, smtp, engine)
    before = len(mails(smtp))
    _corrected(engine, desk, clock)
    real_record, broken = ledger.record, {"on": True}

    def record(session, finishes):
        if broken["on"] and any(f.claimed.window_key.startswith("correction:") for f in finishes):
            raise OperationalError("UPDATE delivery", {}, Exception("the database went away"))
        return real_record(session, finishes)

    monkeypatch.setattr(ledger, "record", record)
    monkeypatch.setattr(recording.time, "sleep", lambda seconds: None)
    runner.send_revisions()  # sends, cannot record: must not raise, must not leave the rows to a reclaim
    broken["on"] = False
    sent = len(mails(smtp))
    assert sorted(m["To"] for m in mails(smtp)[before:]) == ["html@example.org", "leaving@example.org",
                                                             "text@example.org"]
    clock.now += timedelta(minutes=30)  # past any lease
    with db.session_scope(engine) as session:
        ledger.reclaim_expired(session, now=clock.now)
    runner.send_revisions()
    assert len(mails(smtp)) == sent  # held, not sent twice
    with db.session_scope(engine) as session:
        assert ledger.held_ids(session)[0] == 5  # three emails, the channel, the webhook


def test_a_correction_approved_while_a_digest_is_being_sent_reaches_its_reader(engine, runner, clock, smtp, desk):
    # A sender claimed the digests and rendered the SITREP as it stood (a batch reads it once, at its
    # start); the correction is approved before those sends are recorded. Their readers read the
    # original, so they are told; one whose send then failed never had it, and is not.
    from dispatch import ledger

    runner.plan()
    with db.session_scope(engine) as session:
        claimed = ledger.claim(session, now=clock.now, limit=100)
        people = {c.id: session.get(subscribers.Subscriber, c.subscriber_id).address for c in claimed}
    assert len(claimed) == 5
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ed", note=NOTE)
        assert revisions.approve_correction(session, desk, by="chief", now=clock.now).notices == 5
    with db.session_scope(engine) as session:
        for c in claimed:
            if people[c.id] in ("html@example.org", "text@example.org"):
                ledger.mark_sent(session, c, receipt="250 ok", now=clock.now)
            else:
                ledger.mark_failed(session, c, error="550 no", now=clock.now)
    clock.now += timedelta(minutes=1)
    runner.send_revisions()
    assert sorted(m["To"] for m in mails(smtp)) == ["html@example.org", "text@example.org"]
    with db.session_scope(engine) as session:
        skipped = session.exec(select(Delivery).where(Delivery.window_key == f"correction:{desk}:2",
                                                      Delivery.status == "skipped")).all()
        assert {d.last_error for d in skipped} == {"the reader never received the SITREP"}
        assert len(skipped) == 3


def test_a_notice_waits_while_its_readers_digest_is_still_being_sent(engine, runner, clock, smtp, desk):
    from dispatch import ledger

    runner.plan()
    with db.session_scope(engine) as session:
        claimed = ledger.claim(session, now=clock.now, limit=100)
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ed", note=NOTE)
        revisions.approve_correction(session, desk, by="chief", now=clock.now)
    runner.send_revisions()
    assert mails(smtp) == []  # the digests are still out: nothing is decided yet
    with db.session_scope(engine) as session:
        for c in claimed:
            ledger.mark_sent(session, c, receipt="250 ok", now=clock.now)
    clock.now += timedelta(minutes=2)
    runner.send_revisions()
    assert sorted(m["To"] for m in mails(smtp)) == ["html@example.org", "leaving@example.org", "text@example.org"]


def test_two_approvals_at_once_approve_a_flash_once(postgres_url):
    # Two approvers press "approve as FLASH" at the same moment (web and API): the second must
    # find it approved, not approve it again: each approval is fanned out anew (its own FLASH key),
    # so a second one would send the FLASH to every reader twice.
    import threading

    from dispatch import bootstrap
    from dispatch.errors import WorkflowError

    engine = db.create_engine(postgres_url)
    bootstrap.init_database(engine)
    try:
        with db.session_scope(engine) as session:
            sitrep_id = sitreps.import_parsed(session, parse(STANDARD), actor="ed").sitrep.id
        outcome = {}

        def second():
            try:
                with db.session_scope(engine) as session:
                    sitreps.approve_sitrep(session, sitrep_id, by="cy", flash=True,
                                           at=APPROVED + timedelta(seconds=30))
                outcome["second"] = "approved"
            except WorkflowError as exc:
                outcome["second"] = str(exc)

        with db.session_scope(engine) as session:
            sitreps.approve_sitrep(session, sitrep_id, by="chief", flash=True, at=APPROVED)
            thread = threading.Thread(target=second)
            thread.start()
            thread.join(1.0)  # it waits for this approval's transaction (or, unfixed, approves behind it)
        thread.join(10)
        assert "already approved" in outcome["second"]
        with db.session_scope(engine) as session:
            assert sitreps.get(session, sitrep_id).approved_by == "chief"
    finally:
        engine.dispose()


def test_a_stop_mid_batch_sends_the_notice_in_flight_and_hands_back_the_rest(engine, runner, clock, slack, smtp, desk):
    import threading

    delivered_once(runner, clock, slack, smtp, engine)
    before = len(mails(smtp))
    _corrected(engine, desk, clock)
    stop = threading.Event()

    class Stopping:
        def send(self, *args, **kwargs):
            stop.set()  # SIGTERM arrives while this one is sent
            return runner.channels["email"].send(*args, **kwargs)

    _notice_sender(runner, {**runner.channels, "email": Stopping()}).drain(stop=stop)
    assert len(mails(smtp)) == before + 1
    with db.session_scope(engine) as session:
        rows = session.exec(select(Delivery).where(Delivery.window_key == f"correction:{desk}:2")).all()
        assert sorted(d.status.value for d in rows) == ["pending"] * 4 + ["sent"]
        assert {d.attempts for d in rows if d.status.value == "pending"} == {0}
    runner.send_revisions()
    assert len(mails(smtp)) == before + 3


def test_the_diff_of_a_huge_correction_is_not_quadratic(monkeypatch):
    # 8,000 bullets fit in 64 KB (a web upload may be 256 KB): difflib's matcher is quadratic on
    # repeated lines (6 s here for one diff, and a notice is rendered per reader). Beyond a bound,
    # lines are compared by membership, in one pass.
    import difflib

    from dispatch.desk import corrections

    sizes = []
    real = difflib.SequenceMatcher

    def spy(*args, a=(), b=(), **kwargs):
        sizes.append(max(len(a), len(b)))
        return real(*args, a=a, b=b, **kwargs)

    monkeypatch.setattr(corrections.difflib, "SequenceMatcher", spy)
    old, new = ["a", "b"] * 4000, ["b", "a"] * 4000 + ["c"]
    changes = corrections.diff({"bullets": old}, {"bullets": new})
    assert [c.line() for c in changes] == ["+ bullet: c"]
    assert all(size <= corrections.MATCHED_LINES for size in sizes)
    # Small lists still read as a diff does: a replaced line next to its replacement.
    assert [c.line() for c in corrections.diff({"bullets": ["x", "y"]}, {"bullets": ["x", "z"]})] == [
        "- bullet: y", "+ bullet: z"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=40), st.lists(st.sampled_from("abcd"), max_size=40),
       st.integers(min_value=1, max_value=10))
def test_the_membership_diff_accounts_for_every_line(old, new, bound):
    from collections import Counter

    from dispatch.desk import corrections

    changes = corrections._lines("bullet", old, new, matched=bound)
    removed = Counter(c.text for c in changes if c.sign == "-")
    added = Counter(c.text for c in changes if c.sign == "+")
    assert removed <= Counter(old) and added <= Counter(new)
    assert Counter(old) - removed == Counter(new) - added  # what stays is common to both


def test_a_token_named_after_its_user_is_the_same_person_to_the_two_person_rule(engine, desk):
    # ana corrects on the admin pages, then approves through the API with a token she named after
    # herself ("api:ana"), or through the CLI as a look-alike of her name: all one person.
    with db.session_scope(engine) as session:
        revisions.correct(session, desk, parse(CORRECTED), by="ana", note=NOTE)
    for approver in ("api:ana", "API:Ana ", "ａｎａ", "api: ana"):
        with db.session_scope(engine) as session, pytest.raises(roles.NotPermitted, match="two-person rule"):
            revisions.approve_correction(session, desk, by=approver, two_person=True)
    assert "two-person rule" in roles.two_person_refusal([("ana", "imported")], approver="api:ana")
    assert "two-person rule" in roles.two_person_refusal([("api:ana", "imported")], approver="ANA")
    assert roles.two_person_refusal([("ana", "imported")], approver="api:chief") is None


@pytest.mark.parametrize("stamp", [10**12 - 1, 99_999_999_999])
def test_a_signed_timestamp_past_any_calendar_is_refused_not_a_crash(stamp):
    # Signed with the right key (a provider's bug, or a leaked key): 403 "not a time", never a 500.
    import json as _json

    from dispatch.inbound.providers import mailgun, reading, sendgrid

    from . import providertools as pt

    now = datetime.now(timezone.utc)
    body = b"[]"
    with pytest.raises(reading.Refused) as refused:
        sendgrid.read(body, {k.lower(): v for k, v in pt.sendgrid_headers(body, at=stamp).items()},
                      public_key=sendgrid.load_key(pt.sendgrid_verification_key()), now=now)
    assert refused.value.status == 403
    signed = _json.dumps(pt.mailgun_body(pt.mailgun_failed("gone@example.net", None), at=stamp)).encode()
    with pytest.raises(reading.Refused) as refused:
        mailgun.read(signed, {}, signing_key=pt.MAILGUN_KEY, now=now)
    assert refused.value.status == 403


def test_a_notice_reads_its_readers_deliveries_not_every_reader_of_the_sitrep(engine, database_url):
    # One notice per reader: each must probe its own reader's few deliveries, not walk the
    # SITREP's links (a row per reader), or sending the notices is quadratic in readers.
    from dispatch.revision_notices import reaching

    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's query plan")
    sql = str(reaching(2, 1).compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        plan = " | ".join(row[3] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert plan.startswith("SEARCH delivery USING INDEX") and "(subscriber_id=?)" in plan
    assert "(sitrep_id=? AND delivery_id=?)" in plan
