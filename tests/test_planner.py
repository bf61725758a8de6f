"""Planning against the database: cursors, cheap idle ticks, settle time."""

from datetime import datetime, timedelta, timezone

from sqlmodel import select

from dispatch import db, planner, sitreps, subscribers
from dispatch.models import Delivery, Sitrep, Subscriber
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES

APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
WINDOW_END = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)


def seed(engine, readers):
    with db.session_scope(engine) as session:
        result = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
        for address, prefs in readers:
            s = subscribers.add_subscriber(session, address, prefs=prefs)
            s.created_at = APPROVED - timedelta(days=2)
        sitreps.approve_sitrep(session, result.sitrep.id, by="ed", at=APPROVED)


def delivery_keys(engine):
    with db.session_scope(engine) as session:
        return sorted(d.window_key for d in session.exec(select(Delivery)).all())


def test_windows_are_planned_after_they_settle_and_then_idle_ticks_read_nobody(engine):
    seed(engine, [("a@example.org", Preferences()), ("b@example.org", Preferences(send_at="09:00"))])
    early = planner.plan_due(engine, now=WINDOW_END + timedelta(seconds=30))
    assert early.deliveries_planned == 0  # 07:00 has not settled yet
    report = planner.plan_due(engine, now=WINDOW_END + planner.SETTLE + timedelta(seconds=1))
    assert report.deliveries_planned == 1 and delivery_keys(engine) == ["daily:2026-11-27"]
    idle = planner.plan_due(engine, now=WINDOW_END + timedelta(minutes=5))
    assert (idle.subscribers_checked, idle.deliveries_planned) == (0, 0)  # nobody is due: nobody is read
    with db.session_scope(engine) as session:
        a = subscribers.get(session, "a@example.org")
        assert a.planned_through == WINDOW_END and a.next_due_at == WINDOW_END + timedelta(days=1)


def test_changing_the_schedule_makes_the_planner_look_again(engine):
    seed(engine, [("a@example.org", Preferences())])
    planner.plan_due(engine, now=WINDOW_END + timedelta(minutes=5))
    with db.session_scope(engine) as session:
        subscribers.edit_subscriber(session, "a@example.org", Preferences(send_at="08:00"))
    report = planner.plan_due(engine, now=WINDOW_END + timedelta(minutes=6))
    assert report.subscribers_checked == 1 and report.deliveries_planned == 0  # already got today's


def test_immediate_fan_out_happens_once_per_approval(engine):
    seed(engine, [("now@example.org", Preferences(cadence="immediate")),
                  ("later@example.org", Preferences(cadence="immediate", regions=["americas"]))])
    first = planner.plan_due(engine, now=APPROVED + timedelta(minutes=1))
    assert (first.sitreps_fanned_out, first.deliveries_planned) == (1, 1)
    again = planner.plan_due(engine, now=APPROVED + timedelta(minutes=2))
    assert (again.sitreps_fanned_out, again.subscribers_checked, again.deliveries_planned) == (0, 0, 0)
    with db.session_scope(engine) as session:
        assert session.exec(select(Sitrep)).one().immediate_planned_at == APPROVED + timedelta(minutes=1)
    assert delivery_keys(engine) == ["sitrep:1@20261126T150000Z"]


def test_scattered_due_readers_keep_their_own_regions(engine):
    """Readers due at one hour are scattered among the ids; their regions and
    analysts are read by id then, and must still be theirs."""
    readers = []
    for n in range(30):
        if n % 10 == 0:  # 0, 10, 20: due at 07:00 UTC; two want only the Americas
            prefs = Preferences(regions=["americas"] if n else ["europe-eurasia"])
        else:
            prefs = Preferences(timezone="Asia/Tokyo", regions=["americas"])
        readers.append((f"r{n}@example.org", prefs))
    seed(engine, readers)  # the SITREP is about Ukraine and its grain buyers: not the Americas
    # 07:00 UTC has passed, 07:00 in Tokyo has not come again; the Tokyo readers were planned before.
    with db.session_scope(engine) as session:
        for n in range(30):
            if n % 10:
                reader = subscribers.get(session, f"r{n}@example.org")
                reader.planned_through = WINDOW_END
                reader.next_due_at = WINDOW_END + timedelta(days=1)
    report = planner.plan_due(engine, now=WINDOW_END + timedelta(minutes=5))
    assert report.subscribers_checked == 3
    with db.session_scope(engine) as session:
        planned = {session.get(Subscriber, d.subscriber_id).address for d in session.exec(select(Delivery)).all()}
    assert planned == {"r0@example.org"}


def test_readers_read_in_small_batches_each_get_their_own_windows(engine):
    """Several batches of readers and several SITREPs, one withdrawn before
    planning: every reader gets exactly the windows their own preferences
    give, each SITREP still approved is marked fanned out, and planning
    again inserts nothing."""
    immediate = [(f"i{n}@example.org", Preferences(cadence="immediate", regions=[region]))
                 for n, region in enumerate(["europe-eurasia", "east-asia-pacific", "americas"] * 3)]
    daily = [(f"d{n}@example.org", Preferences(regions=[region]))
             for n, region in enumerate(["europe-eurasia", "east-asia-pacific", "americas", "global"] * 2)]
    seed(engine, immediate + daily)  # the standard SITREP: Ukraine (europe-eurasia), approved at APPROVED
    with db.session_scope(engine) as session:
        japan = sitreps.import_parsed(session, parse((FIXTURES / "star_bullets_wrapped.txt").read_text()),
                                      actor="ed", regions=["east-asia-pacific"]).sitrep.id
        withdrawn = sitreps.import_parsed(session, parse((FIXTURES / "unquoted_several.txt").read_text()),
                                          actor="ed", regions=["americas"]).sitrep.id
        for sitrep_id in (japan, withdrawn):
            sitreps.approve_sitrep(session, sitrep_id, by="ed", at=APPROVED + timedelta(hours=1))
        sitreps.withdraw_sitrep(session, withdrawn, by="ed")
    report = planner.plan_due(engine, now=WINDOW_END + timedelta(minutes=5), batch=2)
    with db.session_scope(engine) as session:
        got = {(session.get(Subscriber, d.subscriber_id).address, d.window_key.split("@")[0], tuple(d.sitrep_ids))
               for d in session.exec(select(Delivery)).all()}
        marked = {s.id: s.immediate_planned_at for s in session.exec(select(Sitrep)).all()}
    europe = [f"i{n}@example.org" for n in (0, 3, 6)]
    asia = [f"i{n}@example.org" for n in (1, 4, 7)]
    assert got == ({(a, "sitrep:1", (1,)) for a in europe} | {(a, f"sitrep:{japan}", (japan,)) for a in asia}
                   | {("d0@example.org", "daily:2026-11-27", (1,)), ("d4@example.org", "daily:2026-11-27", (1,)),
                      ("d1@example.org", "daily:2026-11-27", (japan,)),
                      ("d5@example.org", "daily:2026-11-27", (japan,))})
    assert report.deliveries_planned == len(got) == 10
    assert marked[1] is not None and marked[japan] is not None and marked[withdrawn] is None
    again = planner.plan_due(engine, now=WINDOW_END + timedelta(minutes=6), batch=2)
    assert (again.deliveries_planned, again.sitreps_fanned_out) == (0, 0)


def test_a_read_scope_reads_while_another_connection_writes(engine):
    """Planning reads the next batch while the last one is being written: the
    read must see committed rows at once instead of waiting for the writer's
    lock (on SQLite every other transaction begins IMMEDIATE and would wait)."""
    seed(engine, [("a@example.org", Preferences())])
    with db.session_scope(engine) as writing:
        writing.get(Subscriber, 1).name = "uncommitted"
        writing.flush()  # the write lock is held from here until commit
        with db.read_scope(engine) as reading:
            assert reading.get(Subscriber, 1).name == ""  # the committed row, without waiting
