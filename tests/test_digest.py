"""Matching, windows (DST, downtime, weekly, immediate) and ordering: pure."""

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from dispatch import digest
from dispatch.digest import Quote, Recipient, SitrepView

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sitrep(id, *, regions=("europe-eurasia",), analysts=(), approved=utc(2025, 3, 1, 12), day=None, priority=0):
    return SitrepView(
        id=id, title=f"SITREP {id}", event_date=day or approved.date(), approved_at=approved,
        regions=tuple(regions), summary=("a bullet",), priority=priority,
        commentary=tuple(Quote(a, a.title(), None, f"quote by {a}") for a in analysts))


def reader(**kw) -> Recipient:
    base = dict(id=1, kind="email", address="r@example.org", created_at=utc(2025, 1, 1))
    base.update(kw)
    return Recipient(**base)


# --- matching -----------------------------------------------------------------------

EU = sitrep(1, regions=("europe-eurasia",), analysts=("walsh",))
ASIA = sitrep(2, regions=("east-asia-pacific",), analysts=("groen",))
BOTH = sitrep(3, regions=("europe-eurasia", "east-asia-pacific"), analysts=("walsh", "groen"))
NONE = sitrep(4, regions=("americas",), analysts=())


@pytest.mark.parametrize("regions, analysts, expected", [
    ((), (), {1, 2, 3, 4}),                                       # no preference: everything
    (("europe-eurasia",), (), {1, 3}),                            # one region
    (("europe-eurasia", "americas"), (), {1, 3, 4}),              # regions OR-ed
    ((), ("groen",), {2, 3}),                                     # one analyst
    ((), ("groen", "walsh"), {1, 2, 3}),                          # analysts OR-ed
    (("europe-eurasia",), ("groen",), {3}),                       # facets AND-ed
    (("americas",), ("walsh",), set()),
])
def test_matching(regions, analysts, expected):
    r = reader(regions=frozenset(regions), analysts=frozenset(analysts))
    assert {s.id for s in (EU, ASIA, BOTH, NONE) if digest.matches(r, s)} == expected


# --- windows across DST -----------------------------------------------------------

@pytest.mark.parametrize("tz, day, send_at, expected_utc", [
    # New York springs forward on 9 March 2025: 07:00 is 12:00 UTC before, 11:00 after.
    ("America/New_York", date(2025, 3, 8), "07:00", utc(2025, 3, 8, 12)),
    ("America/New_York", date(2025, 3, 9), "07:00", utc(2025, 3, 9, 11)),
    # 02:30 does not exist that day: sent when clocks reach 03:30 EDT.
    ("America/New_York", date(2025, 3, 9), "02:30", utc(2025, 3, 9, 7, 30)),
    # 01:30 happens twice on 2 November 2025: the first (EDT) one counts.
    ("America/New_York", date(2025, 11, 2), "01:30", utc(2025, 11, 2, 5, 30)),
    # London springs forward on 30 March 2025 and falls back on 26 October.
    ("Europe/London", date(2025, 3, 29), "07:00", utc(2025, 3, 29, 7)),
    ("Europe/London", date(2025, 3, 30), "07:00", utc(2025, 3, 30, 6)),
    ("Europe/London", date(2025, 3, 30), "01:30", utc(2025, 3, 30, 1, 30)),
    ("Europe/London", date(2025, 10, 26), "01:30", utc(2025, 10, 26, 0, 30)),
    ("Europe/London", date(2025, 10, 27), "07:00", utc(2025, 10, 27, 7)),
])
def test_send_instant_is_local_time_in_each_zone(tz, day, send_at, expected_utc):
    from zoneinfo import ZoneInfo
    assert digest.local_send_instant(day, send_at, ZoneInfo(tz)) == expected_utc


@pytest.mark.parametrize("tz, first_day", [("America/New_York", date(2025, 3, 6)),
                                           ("Europe/London", date(2025, 3, 27)),
                                           ("Europe/London", date(2025, 10, 23))])
def test_one_window_per_local_day_across_a_dst_change(tz, first_day):
    """Planning every 15 minutes for a week gives exactly one window per day,
    each at 07:00 local, whatever the offset that day."""
    from zoneinfo import ZoneInfo
    r = reader(timezone=tz, send_at="07:00", created_at=utc(2025, 1, 1))
    zone = ZoneInfo(tz)
    now = datetime.combine(first_day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
    r = replace(r, planned_through=now)
    every_day = [sitrep(n, approved=now + timedelta(hours=6 * n - 5)) for n in range(1, 30)]
    keys, ends = [], []
    for _ in range(7 * 24 * 4):
        now += timedelta(minutes=15)
        plan = digest.plan(r, every_day, now=now)
        for window in plan.windows:
            keys.append(window.key)
            ends.append(window.end.astimezone(zone))
        r = replace(r, planned_through=plan.planned_through)
    assert len(keys) == len(set(keys)) == 7
    assert all((end.hour, end.minute) == (7, 0) for end in ends)
    assert [e.date() for e in ends] == [first_day + timedelta(days=n) for n in range(7)]


def test_missed_windows_collapse_into_one_digest():
    """The process was down from Saturday to Monday: one digest on Monday
    with everything approved since Friday's window, not three."""
    r = reader(timezone="Europe/London", send_at="07:00", planned_through=utc(2025, 3, 7, 7))
    approved = [sitrep(1, approved=utc(2025, 3, 7, 9)), sitrep(2, approved=utc(2025, 3, 8, 9)),
                sitrep(3, approved=utc(2025, 3, 9, 9)), sitrep(4, approved=utc(2025, 3, 10, 9))]
    plan = digest.plan(r, approved, now=utc(2025, 3, 10, 8))
    (window,) = plan.windows
    assert window.key == "daily:2025-03-10"
    assert window.sitrep_ids == (1, 2, 3)  # 4 was approved after 07:00 today: tomorrow
    assert (window.start, window.end) == (utc(2025, 3, 7, 7), utc(2025, 3, 10, 7))
    assert plan.planned_through == utc(2025, 3, 10, 7)
    # Planning again at the same moment finds nothing new.
    again = digest.plan(replace(r, planned_through=plan.planned_through), approved, now=utc(2025, 3, 10, 8))
    assert again.windows == ()


def test_nothing_new_means_nothing_sent_but_time_moves_on():
    r = reader(planned_through=utc(2025, 3, 7, 7))
    plan = digest.plan(r, [sitrep(1, approved=utc(2025, 3, 6, 9))], now=utc(2025, 3, 8, 7, 30))
    assert plan.windows == ()
    assert plan.planned_through == utc(2025, 3, 8, 7)


def test_no_matching_sitrep_yields_nothing():
    r = reader(regions=frozenset({"americas"}), planned_through=utc(2025, 3, 7, 7))
    plan = digest.plan(r, [sitrep(1, approved=utc(2025, 3, 7, 9))], now=utc(2025, 3, 8, 7, 30))
    assert plan.windows == ()


def test_window_not_yet_due():
    r = reader(planned_through=utc(2025, 3, 7, 7))
    plan = digest.plan(r, [sitrep(1, approved=utc(2025, 3, 7, 9))], now=utc(2025, 3, 8, 6, 59))
    assert plan.windows == () and plan.planned_through == utc(2025, 3, 7, 7)


def test_window_bounds_are_exclusive_start_inclusive_end():
    r = reader(planned_through=utc(2025, 3, 7, 7))
    at_start, at_end = sitrep(1, approved=utc(2025, 3, 7, 7)), sitrep(2, approved=utc(2025, 3, 8, 7))
    (window,) = digest.plan(r, [at_start, at_end], now=utc(2025, 3, 8, 7)).windows
    assert window.sitrep_ids == (2,)


def test_new_subscriber_first_window_is_a_normal_day():
    r = reader(created_at=utc(2025, 3, 7, 15))  # joined after Friday's 07:00 UTC window
    approved = [sitrep(1, approved=utc(2025, 3, 7, 6)), sitrep(2, approved=utc(2025, 3, 7, 9))]
    (window,) = digest.plan(r, approved, now=utc(2025, 3, 8, 7)).windows
    assert window.sitrep_ids == (2,)


def test_weekly_on_its_weekday():
    # 2025-03-07 is a Friday.
    r = reader(cadence="weekly", weekday=4, send_at="09:00", timezone="America/New_York",
               planned_through=utc(2025, 2, 28, 14))
    approved = [sitrep(n, approved=utc(2025, 3, n, 12)) for n in range(1, 8)]
    assert digest.plan(r, approved, now=utc(2025, 3, 6, 23)).windows == ()
    (window,) = digest.plan(r, approved, now=utc(2025, 3, 7, 14, 1)).windows
    assert window.key == "weekly:2025-03-07" and window.sitrep_ids == (1, 2, 3, 4, 5, 6, 7)
    assert window.end == utc(2025, 3, 7, 14)


def test_immediate_one_window_per_approval_after_joining():
    r = reader(cadence="immediate", created_at=utc(2025, 3, 7, 12), regions=frozenset({"europe-eurasia"}))
    approved = [sitrep(1, approved=utc(2025, 3, 7, 11, 55)),   # before the reader joined
                sitrep(2, approved=utc(2025, 3, 7, 12, 1)),
                sitrep(3, approved=utc(2025, 3, 7, 12, 2), regions=("americas",)),
                sitrep(4, approved=utc(2025, 3, 7, 12, 3))]
    windows = digest.immediate_windows(r, approved)
    assert [(w.key, w.sitrep_ids) for w in windows] == [
        ("sitrep:2@20250307T120100Z", (2,)), ("sitrep:4@20250307T120300Z", (4,))]
    reapproved = replace(approved[1], approved_at=utc(2025, 3, 8, 9))
    assert digest.immediate_windows(r, [reapproved])[0].key == "sitrep:2@20250308T090000Z"
    with pytest.raises(ValueError):
        digest.plan(r, approved, now=utc(2025, 3, 8))


def test_next_due_is_the_following_window_end():
    r = reader(timezone="Europe/London", send_at="07:00", planned_through=utc(2025, 3, 7, 7))
    assert digest.plan(r, [], now=utc(2025, 3, 7, 12)).next_due_at == utc(2025, 3, 8, 7)
    assert digest.plan(r, [], now=utc(2025, 3, 10, 8)).next_due_at == utc(2025, 3, 11, 7)


def test_upcoming_window():
    r = reader(timezone="Asia/Tokyo", send_at="07:30", planned_through=utc(2025, 3, 6, 22, 30))
    assert digest.upcoming_window(r, now=utc(2025, 3, 7, 1)) == (utc(2025, 3, 6, 22, 30), utc(2025, 3, 7, 22, 30))


# --- ordering ---------------------------------------------------------------------------

def test_digest_order_priority_then_newest_and_followed_analysts_first():
    older = sitrep(1, day=date(2025, 3, 1), analysts=("walsh", "groen", "okafor"))
    newer = sitrep(2, day=date(2025, 3, 5))
    urgent = sitrep(3, day=date(2025, 2, 1), priority=5)
    r = reader(analysts=frozenset({"okafor", "groen"}))
    d = digest.build_digest(r, "daily:2025-03-06", [older, newer, urgent])
    assert d.sitrep_ids == (3, 2, 1)
    quotes = d.items[2].quotes
    assert [(q.quote.analyst_slug, q.followed) for q in quotes] == [
        ("groen", True), ("okafor", True), ("walsh", False)]


def test_body_key_groups_equal_bodies_only():
    s = sitrep(1, analysts=("walsh", "groen"))
    a = digest.build_digest(reader(id=1), "k", [s])
    b = digest.build_digest(reader(id=2, name="Other"), "k", [s])
    c = digest.build_digest(reader(id=3, analysts=frozenset({"groen"})), "k", [s])
    d = digest.build_digest(reader(id=4, format="text"), "k", [s])
    assert a.body_key() == b.body_key()
    assert len({a.body_key(), c.body_key(), d.body_key()}) == 3
