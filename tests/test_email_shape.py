"""Digest size and lead decisions (dispatch/email_shape.py): pure, no database."""

from datetime import date, datetime, timezone

import pytest
from hypothesis import given, strategies as st

from dispatch import digest, email_shape
from dispatch.digest import SitrepView

NOW = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)


def items(titles, regions=None):
    views = [SitrepView(id=n + 1, title=t, event_date=date(2026, 11, 1), approved_at=NOW, regions=("x",),
                        region_names=((regions or ["Europe"])[n % len(regions or ["Europe"])],),
                        summary=(f"Lead bullet of {t}.", "Second bullet."), priority=len(titles) - n)
             for n, t in enumerate(titles)]
    return digest.digest_items(frozenset(), views)


def test_subject_leads_with_the_topics_and_counts_the_rest():
    titles = ["Taiwan Strait drills", "Baltic cable cut", "Sahel coup attempt", "Andes floods", "Gaza talks"]
    assert email_shape.subject(titles) == "Taiwan Strait drills, Baltic cable cut + 3 more"
    assert email_shape.subject(titles[:2]) == "Taiwan Strait drills, Baltic cable cut"
    assert email_shape.subject(["Only one"]) == "Only one"
    long = "A very long title about a great many things happening in several places at once today"
    assert email_shape.subject([long]) == "A very long title about a great many things happening in…"
    assert email_shape.subject([long, "Second"]) == "A very long title about a great many things… + 1 more"


@given(st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=60))
def test_subjects_are_short_one_line_and_name_the_first_topic(titles):
    subject = email_shape.subject(titles)
    assert len(subject) <= email_shape.SUBJECT_LIMIT
    assert "\n" not in subject and "\r" not in subject
    first = email_shape.one_line(titles[0])
    assert subject.startswith(first[: min(len(first), 10)].rstrip(" ,;:-")) or not first


def test_at_most_max_full_items_in_full_the_rest_as_headlines():
    shaped = email_shape.shape(items([f"T{n}" for n in range(50)]), max_full=12)
    assert len(shaped.full) == 12 and len(shaped.headlines) == 38
    assert [i.sitrep.title for i in shaped.items] == [f"T{n}" for n in range(50)]
    assert email_shape.shape(items(["a", "b"]), max_full=12).headlines == ()
    with pytest.raises(ValueError):
        email_shape.shape(items(["a"]), max_full=0)


def test_preheader_never_repeats_the_subject():
    one = items(["Ports reopen"])
    assert email_shape.preheader(one, subject_line="Ports reopen") == "Lead bullet of Ports reopen."
    many = items(["Alpha", "Beta", "Gamma", "Delta"])
    subject = email_shape.subject([i.sitrep.title for i in many])
    assert subject == "Alpha, Beta, Gamma, Delta"
    assert email_shape.preheader(many, subject_line=subject) == "Lead bullet of Alpha."
    many = items([f"Some long title number {n}" for n in range(6)])
    subject = email_shape.subject([i.sitrep.title for i in many])
    pre = email_shape.preheader(many, subject_line=subject)
    assert pre.startswith("Also: Some long title number 2; Some long title number 3")
    assert len(pre) <= email_shape.PREHEADER_LIMIT


def test_contents_are_grouped_by_region_only_when_long():
    assert [g.name for g in email_shape.contents(items(["a", "b", "c"]))] == [None]
    grouped = email_shape.contents(items([f"T{n}" for n in range(9)], regions=["Europe", "Americas"]))
    assert [g.name for g in grouped] == ["Europe", "Americas"]
    assert sum(len(g.items) for g in grouped) == 9
