"""The two-person rule on every path: CLI (exit 2), admin pages and API (403)."""

from __future__ import annotations

import pytest

from dispatch import admins, db
from dispatch.config import Settings
from dispatch.desk import roles
from dispatch.desk.roles import Role
from tests.webtools import make_web

from .conftest import FIXTURES

PASSWORD = "correct horse battery"
STANDARD = FIXTURES / "standard.txt"


def test_the_rule_is_on_by_default(monkeypatch):
    monkeypatch.delenv("DISPATCH_TWO_PERSON_RULE")
    assert Settings().two_person_rule is True


def test_who_may_approve():
    history = [("ana", "imported"), ("bob", "tagged")]
    assert "ana imported" in roles.two_person_refusal(history, approver="ana")
    assert "Bob edited" in roles.two_person_refusal(history, approver="Bob")
    assert roles.two_person_refusal(history, approver="cy") is None
    # Every editor since the last approval is an author, not only the last one
    # (else b's text goes out behind c's one-character edit, approved by b).
    assert "b edited" in roles.two_person_refusal([("a", "imported"), ("b", "edited"), ("c", "edited")], approver="b")
    # Edits before an approval were reviewed by it: after a withdrawal, the earlier editor may approve.
    assert roles.two_person_refusal([("a", "imported"), ("b", "edited"), ("c", "approved"), ("d", "withdrawn"),
                                     ("e", "edited")], approver="b") is None
    assert roles.two_person_refusal([], approver="a") is None


@pytest.fixture
def cli(run, tmp_path, monkeypatch):
    monkeypatch.setenv("DISPATCH_TWO_PERSON_RULE", "true")
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    assert run("--database-url", url, "init").exit_code == 0
    return lambda *args, **kw: run("--database-url", url, *args, **kw)


def test_cli_refuses_the_importer_and_the_last_editor(cli):
    assert cli("--as", "ana", "sitrep", "import", STANDARD).exit_code == 0
    refused = cli("sitrep", "approve", "1", "--as", "ana")
    assert refused.exit_code == 2 and "two-person rule" in refused.output
    assert cli("sitrep", "tag", "1", "--region", "global", "--as", "bob").exit_code == 0
    assert cli("--as", "bob", "sitrep", "approve", "1").exit_code == 2
    approved = cli("sitrep", "approve", "1", "--as", "chief")
    assert approved.exit_code == 0, approved.output
    actions = [(r["actor"], r["action"]) for r in __import__("json").loads(cli("audit", "--json").stdout)]
    assert ("chief", "sitrep.approved") in actions and ("ana", "sitrep.approved") not in actions


def test_cli_import_and_approve_in_one_step_is_refused(cli):
    result = cli("--as", "ana", "sitrep", "import", "--approve", STANDARD)
    assert result.exit_code == 2 and "two-person rule" in result.output
    assert '"status": "approved"' not in cli("sitrep", "list", "--json").stdout


def test_web_and_api_refuse_with_403(database_url, engine, mail_sink, tmp_path):
    web = make_web(database_url, engine, mail_sink, tmp_path / "mail", two_person_rule=True)
    with web.client, db.session_scope(engine) as session:
        admins.create_admin(session, "dana", PASSWORD, role=Role.admin)
        admins.create_admin(session, "eli", PASSWORD, role=Role.approver)
        _, token = admins.create_token(session, "cms", role=Role.admin)
    with web.client:
        bearer = {"Authorization": f"Bearer {token}"}
        one_step = web.client.post("/api/sitreps", json={"text": STANDARD.read_text("utf-8"), "approve": True},
                                   headers=bearer)
        assert one_step.status_code == 403 and "two-person" in one_step.json()["detail"]
        sitrep_id = web.client.post("/api/sitreps", json={"text": STANDARD.read_text("utf-8")},
                                    headers=bearer).json()["sitrep"]["id"]
        refused = web.client.post(f"/api/sitreps/{sitrep_id}/approve", headers=bearer)
        assert refused.status_code == 403 and "two-person" in refused.json()["detail"]
        web.sign_in("dana", PASSWORD)
        edited = web.form(f"/admin/sitreps/{sitrep_id}/edit", {"title": "A corrected title", "event_date": "2026-11-30",
                                                                "bullets": "One bullet", "region": "global"},
                          page=f"/admin/sitreps/{sitrep_id}", follow_redirects=False)
        assert edited.status_code == 303, edited.text
        history = web.client.get(f"/api/sitreps/{sitrep_id}", headers=bearer).json()["changes"]
        assert history[-1]["actor"] == "dana", history
        page = web.form(f"/admin/sitreps/{sitrep_id}/approve", page=f"/admin/sitreps/{sitrep_id}")
        assert page.status_code == 403 and "two-person rule" in page.text
        web.sign_in("eli", PASSWORD)
        done = web.form(f"/admin/sitreps/{sitrep_id}/approve", page=f"/admin/sitreps/{sitrep_id}",
                        follow_redirects=False)
        assert done.status_code == 303
        assert web.client.get(f"/api/sitreps/{sitrep_id}", headers=bearer).json()["approved_by"] == "eli"
