"""`dispatch preview` for an immediate reader shows what would really go
out next: each new SITREP on its own, never one already delivered (issue 14)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from dispatch import compose, db, ledger, planner, sitreps, subscribers
from dispatch.models import SubscriberStatus
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES

T0 = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)
FILES = ["standard.txt", "dash_bullets_no_commentary.txt", "star_bullets_wrapped.txt"]


def _import_all(session) -> list[int]:
    return [sitreps.import_parsed(session, parse((FIXTURES / name).read_text()), actor="ed").sitrep.id
            for name in FILES]


def _send_everything_due(engine, now):
    with db.session_scope(engine) as session:
        for claimed in ledger.claim(session, now=now, limit=100):
            assert ledger.mark_sent(session, claimed, receipt="test", now=now)


def _preview(engine, reader_id, now):
    with db.read_scope(engine) as session:
        return compose.preview(session, reader_id, now=now, status=SubscriberStatus.active)


def test_immediate_preview_is_one_digest_per_new_sitrep_never_a_delivered_one(engine):
    with db.session_scope(engine) as session:
        first, second, third = _import_all(session)
        reader = subscribers.add_subscriber(session, "desk@example.org", prefs=Preferences(cadence="immediate"))
        reader.created_at = T0 - timedelta(days=1)
        reader_id = reader.id
        sitreps.approve_sitrep(session, first, by="ed", at=T0)
    planner.plan_due(engine, now=T0 + timedelta(minutes=1))
    _send_everything_due(engine, T0 + timedelta(minutes=2))  # the first SITREP went to them

    with db.session_scope(engine) as session:
        sitreps.approve_sitrep(session, second, by="ed", at=T0 + timedelta(hours=1))
        sitreps.approve_sitrep(session, third, by="ed", at=T0 + timedelta(hours=2))
    now = T0 + timedelta(hours=3)
    result = _preview(engine, reader_id, now)
    assert [d.sitrep_ids for d in result.digests] == [(second,), (third,)]  # each on its own, oldest first
    assert result.digest is result.digests[0] and result.reason == ""
    assert [d.window_key for d in result.digests] == [  # the very windows the planner makes
        f"sitrep:{second}@20261126T100000Z", f"sitrep:{third}@20261126T110000Z"]

    planner.plan_due(engine, now=now)  # queued, not yet sent: still what goes out next
    assert [d.sitrep_ids for d in _preview(engine, reader_id, now).digests] == [(second,), (third,)]
    _send_everything_due(engine, now + timedelta(minutes=1))
    done = _preview(engine, reader_id, now + timedelta(minutes=2))
    assert done.digests == () and done.digest is None and "gone to them already" in done.reason


def test_a_sitrep_fanned_out_before_they_became_immediate_is_not_promised(engine):
    with db.session_scope(engine) as session:
        first, _, _ = _import_all(session)
        reader = subscribers.add_subscriber(session, "late@example.org")
        reader.created_at = T0 - timedelta(days=1)
        reader_id = reader.id
        sitreps.approve_sitrep(session, first, by="ed", at=T0)
    planner.plan_due(engine, now=T0 + timedelta(minutes=1))  # fanned out while they were daily
    with db.session_scope(engine) as session:
        subscribers.edit_subscriber(session, reader_id, Preferences(cadence="immediate"))
    result = _preview(engine, reader_id, T0 + timedelta(hours=1))
    assert result.digests == () and result.reason


def test_cli_preview_shows_each_new_sitrep(run):
    assert run("init").exit_code == 0
    assert run("subscriber", "add", "desk@example.org", "--cadence", "immediate").exit_code == 0
    for name in FILES[:2]:
        assert run("sitrep", "import", FIXTURES / name, "--approve").exit_code == 0, name
    shown = run("preview", "desk@example.org", "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert len(data["deliveries"]) == 2 and data["email"] == data["deliveries"][0]["email"]
    text = run("preview", "desk@example.org").stdout
    assert "2 SITREPs would go out, each on its own" in text and "new SITREPs" not in text
