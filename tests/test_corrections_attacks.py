"""Attacks on corrections and retractions from outside (helper outsider2):
the two-person rule through a replaced correction, and notices only to
readers who really received the SITREP."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from dispatch import db, revisions, sitreps, subscribers
from dispatch.desk import roles
from dispatch.models import Delivery, SubscriberKind
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .test_corrections import (  # noqa: F401 (fixtures)
    APPROVED, CORRECTED, NOTE, STANDARD, clock, desk, mails, runner, slack, smtp, smtp_server,
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
