"""The pure decisions of dispatch.inbound.outcomes."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from dispatch.inbound import outcomes
from dispatch.inbound.outcomes import Kind

NOW = datetime(2026, 12, 3, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("status, action, kind", [
    ("5.1.1", "failed", Kind.hard_bounce), ("5.7.1", "failed", Kind.hard_bounce),
    ("5.2.2", "failed", Kind.soft_bounce),  # mailbox full
    ("4.2.2", "delayed", Kind.soft_bounce), ("4.4.7", "failed", Kind.soft_bounce),
    ("5.1.1", "delayed", Kind.soft_bounce),  # only a warning so far
    ("2.0.0", "delivered", Kind.ignored), ("5.1.1", "relayed", Kind.ignored),
    (None, "failed", Kind.soft_bounce), ("x.y.z", "failed", Kind.soft_bounce), (None, None, Kind.ignored),
    ("9.1.1", "failed", Kind.soft_bounce), ("5.1.1", None, Kind.hard_bounce),
])
def test_status_classes(status, action, kind):
    assert outcomes.status_class(status, action=action) == kind


def test_a_hard_bounce_marks_the_reader_bounced_at_once():
    d = outcomes.decide(Kind.hard_bounce, status="5.1.1", diagnostic="550 5.1.1 no such user", score=0,
                        scored_at=None, now=NOW, limit=5)
    assert d.mark == "bounced" and "5.1.1" in d.reason


def test_a_complaint_unsubscribes_with_reason_complaint():
    d = outcomes.decide(Kind.complaint, status=None, diagnostic="", score=0, scored_at=None, now=NOW, limit=5)
    assert (d.mark, d.reason) == ("unsubscribed", "complaint")


def test_soft_bounces_day_after_day_cross_the_limit():
    score, at, marks = 0.0, None, []
    for day in range(5):
        d = outcomes.decide(Kind.soft_bounce, status="4.2.2", diagnostic="full", score=score, scored_at=at,
                            now=NOW + timedelta(days=day), limit=4)
        marks.append(d.mark)
        score, at = d.score, NOW + timedelta(days=day)
        if d.mark:
            break
    assert marks[-1] == "bounced" and marks[:-1] == [None] * (len(marks) - 1)
    assert len(marks) == 5  # decay slows the climb: four days make 3.5 points, the fifth 4.2


def test_repeated_notices_the_same_day_count_once():
    first = outcomes.decide(Kind.soft_bounce, status="4.4.1", diagnostic="", score=0, scored_at=None, now=NOW,
                            limit=2)
    again = outcomes.decide(Kind.soft_bounce, status="4.4.1", diagnostic="", score=first.score, scored_at=NOW,
                            now=NOW + timedelta(hours=4), limit=2)
    assert first.score == 1.0 and again.score is None and again.mark is None


def test_an_occasional_full_mailbox_never_crosses_the_limit():
    score, at = 0.0, None
    for month in range(24):  # one soft bounce a month for two years
        now = NOW + timedelta(days=30 * month)
        d = outcomes.decide(Kind.soft_bounce, status="5.2.2", diagnostic="", score=score, scored_at=at, now=now,
                            limit=3)
        assert d.mark is None
        score, at = d.score, now
    assert score < 1.1


@given(st.floats(0, 1000), st.integers(0, 10**7))
def test_the_score_only_decays(score, seconds):
    since = NOW - timedelta(seconds=seconds)
    assert 0 <= outcomes.decayed(score, since=since, now=NOW) <= score


@given(st.text(max_size=40))
def test_any_status_text_is_a_status_or_none(text):
    stored = outcomes.valid_status(text)
    assert stored is None or (len(stored) <= 11 and stored[0] in "245")
