"""The approval workflow, on SQLite and on PostgreSQL."""

from datetime import date

import pytest
from sqlmodel import select

from dispatch import sitreps
from dispatch.errors import DuplicateError, FieldError, NotFoundError, WorkflowError
from dispatch.models import Analyst, SitrepStatus
from dispatch.sitrep_text import parse

from .conftest import FIXTURES


def parsed(name="standard.txt"):
    return parse((FIXTURES / name).read_text("utf-8"))


def test_import_creates_a_draft_with_suggested_regions_and_analysts(session):
    result = sitreps.import_parsed(session, parsed(), actor="ed")
    s = result.sitrep
    assert result.created
    assert s.status == SitrepStatus.draft and s.approved_at is None
    # Mostly about Ukraine; the buyers in Egypt and Lebanon are named twice.
    assert sitreps.region_slugs(s) == ["europe-eurasia", "middle-east-north-africa"]
    assert [c.analyst.name for c in s.commentary] == ["Dana Whitfield", "Samir Haddad"]
    assert session.exec(select(Analyst.slug).order_by(Analyst.slug)).all() == ["dana-whitfield", "samir-haddad"]
    assert [ch.action for ch in s.changes] == ["imported"]


def test_analysts_are_shared_between_sitreps(session):
    sitreps.import_parsed(session, parsed("standard.txt"), actor="ed")
    sitreps.import_parsed(session, parsed("unquoted_several.txt"), actor="ed")
    names = session.exec(select(Analyst.name).order_by(Analyst.name)).all()
    assert names == ["Dana Whitfield", "Lena Okafor", "Mei Lin Zhao", "Samir Haddad"]


def test_importing_twice_creates_no_duplicate(session):
    first = sitreps.import_parsed(session, parsed(), actor="ed")
    again = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text().replace("\n", "\r\n")),
                                  actor="ed")
    assert not again.created and again.sitrep.id == first.sitrep.id
    assert len(sitreps.list_sitreps(session)) == 1


def test_draft_approved_withdrawn_and_approved_again(session):
    s = sitreps.import_parsed(session, parsed(), actor="ed").sitrep
    sitreps.approve_sitrep(session, s.id, by="chief")
    assert s.status == SitrepStatus.approved and s.approved_by == "chief"
    assert s.approved_at is not None and s.approved_at.tzinfo is not None
    with pytest.raises(WorkflowError, match="already approved"):
        sitreps.approve_sitrep(session, s.id, by="chief")
    sitreps.withdraw_sitrep(session, s.id, by="chief", reason="wrong figures")
    assert s.status == SitrepStatus.withdrawn
    with pytest.raises(WorkflowError, match="already withdrawn"):
        sitreps.withdraw_sitrep(session, s.id, by="chief")
    sitreps.approve_sitrep(session, s.id, by="chief")
    assert [(c.actor, c.action) for c in s.changes] == [
        ("ed", "imported"), ("chief", "approved"), ("chief", "withdrawn"), ("chief", "approved")]
    assert s.changes[2].detail == "wrong figures"


def test_import_with_approve(session):
    s = sitreps.import_parsed(session, parsed(), actor="ed", approve=True).sitrep
    assert s.status == SitrepStatus.approved and s.approved_by == "ed"


def test_a_released_sitrep_is_not_edited_or_tagged_but_corrected(session):
    s = sitreps.import_parsed(session, parsed(), actor="ed", approve=True).sitrep
    corrected = parse((FIXTURES / "standard.txt").read_text().replace("about a dozen", "fourteen"))
    with pytest.raises(WorkflowError, match="sitrep correct 1"):
        sitreps.edit_sitrep(session, s.id, by="chief", content=corrected, priority=5)
    with pytest.raises(WorkflowError, match="sitrep correct 1"):
        sitreps.tag_sitrep(session, s.id, ["global"], by="chief")
    assert s.priority == 0 and "fourteen" not in s.summary[0]


def test_an_edit_under_embargo_sends_it_back_to_draft(session):
    from datetime import datetime, timedelta, timezone

    s = sitreps.import_parsed(session, parsed(), actor="ed").sitrep
    sitreps.approve_sitrep(session, s.id, by="chief", release_at=datetime.now(timezone.utc) + timedelta(days=1))
    sitreps.edit_sitrep(session, s.id, by="ed", priority=5)
    assert s.status == SitrepStatus.draft and s.approved_at is None and s.priority == 5
    assert [c.action for c in s.changes][-2:] == ["edited", "approval withdrawn"]


def test_edit_to_an_existing_title_and_date_is_refused(session):
    a = sitreps.import_parsed(session, parsed("standard.txt"), actor="ed").sitrep
    b = sitreps.import_parsed(session, parsed("star_bullets_wrapped.txt"), actor="ed").sitrep
    with pytest.raises(DuplicateError):
        sitreps.edit_sitrep(session, b.id, by="ed", title=a.title, event_date=a.event_date)


def test_tag_replaces_regions_and_rejects_unknown_ones(session):
    s = sitreps.import_parsed(session, parsed(), actor="ed").sitrep
    sitreps.tag_sitrep(session, s.id, ["Middle East and North Africa", "europe-eurasia"], by="ed")
    assert sitreps.region_slugs(s) == ["middle-east-north-africa", "europe-eurasia"]
    with pytest.raises(FieldError, match="unknown region 'atlantis'.*allowed: americas"):
        sitreps.tag_sitrep(session, s.id, ["atlantis"], by="ed")


def test_unknown_sitrep(session):
    with pytest.raises(NotFoundError):
        sitreps.approve_sitrep(session, 999, by="ed")


def test_list_filters_by_status_and_text(session):
    a = sitreps.import_parsed(session, parsed("standard.txt"), actor="ed").sitrep
    sitreps.import_parsed(session, parsed("star_bullets_wrapped.txt"), actor="ed")
    sitreps.approve_sitrep(session, a.id, by="ed")
    assert [s.id for s in sitreps.list_sitreps(session, status=SitrepStatus.approved)] == [a.id]
    assert [s.title for s in sitreps.list_sitreps(session, search="yen")] == ["Snap Election Called in Japan"]
    dates = [s.event_date for s in sitreps.list_sitreps(session)]
    assert dates == sorted(dates, reverse=True) == [date(2025, 6, 14), date(2025, 3, 3)]


def test_a_sitrep_naming_no_place_is_tagged_global(session):
    text = "Desk SITREP – A Quiet Day\n\nMay 1, 2025\nWhat has Happened:\n• Nothing of note.\n"
    s = sitreps.import_parsed(session, parse(text), actor="ed").sitrep
    assert sitreps.region_slugs(s) == ["global"]
