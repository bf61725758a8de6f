"""A retraction is final (SQLite and PostgreSQL): readers were told the
SITREP is withdrawn because it was wrong, so no path approves it again —
`sitrep approve` (FLASH and embargo too), `sitrep import --approve` of the
same text, the approve form, the API — and it is not edited, tagged or
corrected either. Each refusal names what to do instead (a new SITREP),
writes nothing (no history line, no audit entry, no delivery) and answers
as the other status refusals do: CLI exit 1 (2 in a batch import), 409."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dispatch import admins, db, revisions, sitreps, subscribers
from dispatch.desk.roles import Role
from dispatch.errors import WorkflowError
from dispatch.models import AuditEntry, Delivery, SitrepChange, SitrepStatus, utcnow
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences
from tests.webtools import make_web

from .conftest import FIXTURES

STANDARD = FIXTURES / "standard.txt"
TEXT = STANDARD.read_text("utf-8")
OTHER = TEXT.replace("Port Strike Halts Grain Shipments from Odesa", "Port Strike Ends in Odesa")
REFUSED = "was retracted"
INSTEAD = "as a new SITREP"
PASSWORD = "correct horse battery"


def _counts(engine) -> tuple[int, int, int]:
    with db.session_scope(engine) as session:
        return tuple(session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                     for table in (SitrepChange, AuditEntry, Delivery))


def _retracted(engine) -> int:
    with db.session_scope(engine) as session:
        subscribers.add_subscriber(session, "now@example.org", prefs=Preferences(cadence="immediate"))
        sitrep = sitreps.import_parsed(session, parse(TEXT), actor="ed").sitrep
        sitreps.approve_sitrep(session, sitrep.id, by="chief")
        revisions.retract(session, sitrep.id, by="chief", reason="The strike report was false.")
        return sitrep.id


@pytest.mark.parametrize("change", [
    lambda s, i: sitreps.approve_sitrep(s, i, by="chief"),
    lambda s, i: sitreps.approve_sitrep(s, i, by="chief", flash=True),
    lambda s, i: sitreps.approve_sitrep(s, i, by="chief", release_at=utcnow() + timedelta(days=1)),
    lambda s, i: sitreps.import_parsed(s, parse(TEXT), actor="chief", approve=True),
    lambda s, i: sitreps.edit_sitrep(s, i, by="ed", priority=3),
    lambda s, i: sitreps.edit_sitrep(s, i, by="ed", content=parse(OTHER)),
    lambda s, i: sitreps.tag_sitrep(s, i, ["global"], by="ed"),
    lambda s, i: revisions.correct(s, i, parse(OTHER), by="ed", note="A new title."),
], ids=["approve", "flash", "embargo", "import-approve", "edit", "edit-content", "tag", "correct"])
def test_a_retracted_sitrep_is_not_changed_again(engine, change):
    sitrep_id = _retracted(engine)
    before = _counts(engine)
    with db.session_scope(engine) as session, pytest.raises(WorkflowError) as refused:
        change(session, sitrep_id)
    assert REFUSED in str(refused.value) and INSTEAD in str(refused.value)
    assert _counts(engine) == before  # no history line, no audit entry, no delivery (a FLASH plans none)
    with db.session_scope(engine) as session:
        sitrep = sitreps.get(session, sitrep_id)
        assert sitrep.status == SitrepStatus.withdrawn and sitrep.title.startswith("Port Strike Halts")


def test_a_plain_withdrawal_may_still_be_approved_again(engine):
    with db.session_scope(engine) as session:
        sitrep = sitreps.import_parsed(session, parse(TEXT), actor="ed").sitrep
        sitreps.approve_sitrep(session, sitrep.id, by="chief")
        sitreps.withdraw_sitrep(session, sitrep.id, by="chief", reason="Hold it for now.")
        sitreps.edit_sitrep(session, sitrep.id, by="ed", priority=2)
        assert sitreps.approve_sitrep(session, sitrep.id, by="chief").status == SitrepStatus.approved
        # Importing the same text again without --approve still just finds it.
        assert not sitreps.import_parsed(session, parse(TEXT), actor="ed").created


def test_the_cli_refuses_each_path_and_a_new_sitrep_goes_out(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    cli = lambda *args: run("--database-url", url, *args)  # noqa: E731
    other = tmp_path / "other.txt"
    other.write_text(OTHER, "utf-8")
    assert cli("init").exit_code == 0
    assert cli("--as", "ed", "sitrep", "import", STANDARD).exit_code == 0
    assert cli("--as", "chief", "sitrep", "approve", "1").exit_code == 0
    assert cli("--as", "chief", "sitrep", "withdraw", "1", "--retract", "--reason", "False.").exit_code == 0
    audit_before = json.loads(cli("audit", "--json").stdout)
    for args in (["sitrep", "approve", "1"], ["sitrep", "approve", "1", "--flash"],
                 ["sitrep", "approve", "1", "--release-at", "2099-01-01T06:00Z"],
                 ["sitrep", "edit", "1", "--priority", "3"], ["sitrep", "tag", "1", "--region", "global"],
                 ["sitrep", "correct", "1", "--from-file", other, "--note", "New title."]):
        refused = cli("--as", "chief", *args)
        assert refused.exit_code == 1, (args, refused.output)
        assert REFUSED in refused.output and INSTEAD in refused.output, refused.output
    # A batch import goes on past the refused file (exit 2, as for a bad file): the new SITREP is #2.
    batch = cli("--as", "chief", "sitrep", "import", "--approve", STANDARD, other)
    assert batch.exit_code == 2 and REFUSED in batch.output and "imported #2" in batch.output, batch.output
    assert json.loads(cli("sitrep", "show", "1", "--json").stdout)["status"] == "withdrawn"
    audit_after = json.loads(cli("audit", "--json").stdout)
    new = [e for e in audit_after if e["id"] not in {a["id"] for a in audit_before}]
    assert {e["target"] for e in new} <= {"sitrep:2", "commentary:2", "commentary:3", "commentary:4"}, new


def test_the_approve_form_and_the_api_answer_409(database_url, engine, mail_sink, tmp_path):
    web = make_web(database_url, engine, mail_sink, tmp_path / "mail")
    sitrep_id = _retracted(engine)
    with db.session_scope(engine) as session:
        admins.create_admin(session, "eli", PASSWORD, role=Role.admin)
        _, token = admins.create_token(session, "desk", role=Role.admin)
    bearer = {"Authorization": f"Bearer {token}"}
    before = _counts(engine)
    with web.client:
        for path in (f"/api/sitreps/{sitrep_id}/approve", f"/api/sitreps/{sitrep_id}/approve?flash=true"):
            refused = web.client.post(path, headers=bearer)
            assert refused.status_code == 409 and REFUSED in refused.json()["detail"], refused.text
        again = web.client.post("/api/sitreps", json={"text": TEXT, "approve": True}, headers=bearer)
        assert again.status_code == 409 and INSTEAD in again.json()["detail"], again.text
        corrected = web.client.post(f"/api/sitreps/{sitrep_id}/corrections",
                                    json={"text": OTHER, "note": "A new title."}, headers=bearer)
        assert corrected.status_code == 409 and REFUSED in corrected.json()["detail"], corrected.text
        web.sign_in("eli", PASSWORD)
        page = web.client.get(f"/admin/sitreps/{sitrep_id}").text
        assert "Retracted: it is not approved" in page
        assert f'action="/admin/sitreps/{sitrep_id}/approve"' not in page
        assert f'action="/admin/sitreps/{sitrep_id}/edit"' not in page
        page_of = f"/admin/sitreps/{sitrep_id}"
        for path, data in ((f"/admin/sitreps/{sitrep_id}/approve", {"flash": "true"}),
                           (f"/admin/sitreps/{sitrep_id}/edit", {"title": "Other", "event_date": "2025-03-03",
                                                                  "bullets": "One", "region": "global"}),
                           (f"/admin/sitreps/{sitrep_id}/correct", {"text": OTHER, "note": "A new title."})):
            # The page offers no such form now; a stale tab may still post one (its CSRF token is the page's).
            refused = web.form(path, data, page=page_of)
            assert refused.status_code == 409 and REFUSED in refused.text, refused.text
        imported = web.form("/admin/sitreps/new", {"text": TEXT, "approve": "true"}, page="/admin/sitreps/new")
        assert imported.status_code == 409 and REFUSED in imported.text
    assert _counts(engine)[0::2] == before[0::2]  # no history line, no delivery
    with db.session_scope(engine) as session:
        assert session.execute(sa.select(sa.func.count()).select_from(AuditEntry).where(
            AuditEntry.action.like("sitrep.%"), AuditEntry.target == f"sitrep:{sitrep_id}",
            AuditEntry.id > before[1])).scalar_one() == 0
