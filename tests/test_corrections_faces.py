"""Corrections on every face: the CLI (exit 2 for the two-person rule), the
admin pages and the API (403); released SITREPs refuse edits and name
`sitrep correct`; the audit log holds each step with its actor."""

from __future__ import annotations

import json

from dispatch import admins, db
from dispatch.desk.roles import Role
from tests.webtools import make_web

from .conftest import FIXTURES

PASSWORD = "correct horse battery"
STANDARD = FIXTURES / "standard.txt"
CORRECTED_TEXT = STANDARD.read_text("utf-8").replace("about a dozen grain carriers", "fourteen grain carriers")


def test_cli_correct_approve_retract_with_two_people(run, tmp_path, monkeypatch):
    monkeypatch.setenv("DISPATCH_TWO_PERSON_RULE", "true")
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    cli = lambda *args: run("--database-url", url, *args)  # noqa: E731
    corrected = tmp_path / "corrected.txt"
    corrected.write_text(CORRECTED_TEXT, "utf-8")
    assert cli("init").exit_code == 0
    assert cli("--as", "ed", "sitrep", "import", STANDARD).exit_code == 0
    early = cli("--as", "ed", "sitrep", "correct", "1", "--from-file", corrected, "--note", "fourteen")
    assert early.exit_code == 1 and "draft, not released" in early.output
    assert cli("--as", "chief", "sitrep", "approve", "1").exit_code == 0

    edit = cli("--as", "ed", "sitrep", "edit", "1", "--title", "Something else")
    assert edit.exit_code == 1 and "sitrep correct 1" in edit.output
    tag = cli("--as", "ed", "sitrep", "tag", "1", "--region", "global")
    assert tag.exit_code == 1 and "sitrep correct 1" in tag.output
    no_note = cli("--as", "ed", "sitrep", "correct", "1", "--from-file", corrected, "--note", " ")
    assert no_note.exit_code == 2 and "note" in no_note.output

    made = cli("--as", "ed", "sitrep", "correct", "1", "--from-file", corrected, "--note", "It was fourteen.")
    assert made.exit_code == 0, made.output
    assert "approve-correction 1" in made.output and "+ bullet: Dock workers" in made.output
    refused = cli("--as", "ed", "sitrep", "approve-correction", "1")
    assert refused.exit_code == 2 and "two-person rule: ed made this correction" in refused.output
    done = cli("--as", "chief", "sitrep", "approve-correction", "1")
    assert done.exit_code == 0 and "approved revision 2" in done.output, done.output
    nothing = cli("--as", "chief", "sitrep", "approve-correction", "1")
    assert nothing.exit_code == 1 and "no correction awaiting approval" in nothing.output
    shown = json.loads(cli("sitrep", "show", "1", "--json").stdout)
    assert "fourteen grain carriers" in shown["summary"][0] and shown["status"] == "approved"
    listed = json.loads(cli("sitrep", "revisions", "1", "--json").stdout)
    assert [(r["revision"], r["kind"], r["made_by"], r["approved_by"]) for r in listed] == [
        (2, "correction", "ed", "chief")]

    retracted = cli("--as", "chief", "sitrep", "withdraw", "1", "--retract", "--reason", "False report.")
    assert retracted.exit_code == 0 and "retracted #1" in retracted.output, retracted.output
    actions = [(r["actor"], r["action"]) for r in json.loads(cli("audit", "--json").stdout)]
    assert ("ed", "sitrep.correction") in actions
    assert ("chief", "sitrep.correction.approved") in actions
    assert ("chief", "sitrep.retraction") in actions and ("chief", "sitrep.withdrawn") in actions
    assert ("ed", "sitrep.correction.approved") not in actions


def test_an_edit_under_embargo_needs_approving_again(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    cli = lambda *args: run("--database-url", url, *args)  # noqa: E731
    assert cli("init").exit_code == 0
    assert cli("--as", "ed", "sitrep", "import", STANDARD).exit_code == 0
    assert cli("--as", "chief", "sitrep", "approve", "1", "--release-at", "2099-01-01T06:00Z").exit_code == 0
    assert cli("--as", "ed", "sitrep", "edit", "1", "--priority", "3").exit_code == 0
    shown = json.loads(cli("sitrep", "show", "1", "--json").stdout)
    assert shown["status"] == "draft" and shown["scheduled_for"] is None
    assert shown["changes"][-1]["action"] == "approval withdrawn"


def _released(web, bearer) -> int:
    sitrep_id = web.client.post("/api/sitreps", json={"text": STANDARD.read_text("utf-8")},
                                headers=bearer["cms"]).json()["sitrep"]["id"]
    assert web.client.post(f"/api/sitreps/{sitrep_id}/approve", headers=bearer["desk"]).status_code == 200
    return sitrep_id


def test_api_and_admin_pages_refuse_the_corrector_with_403(database_url, engine, mail_sink, tmp_path):
    web = make_web(database_url, engine, mail_sink, tmp_path / "mail", two_person_rule=True)
    with web.client, db.session_scope(engine) as session:
        admins.create_admin(session, "dana", PASSWORD, role=Role.admin)
        admins.create_admin(session, "eli", PASSWORD, role=Role.approver)
        _, cms = admins.create_token(session, "cms", role=Role.admin)
        _, desk = admins.create_token(session, "desk", role=Role.approver)
        _, viewer = admins.create_token(session, "viewer", role=Role.viewer)
    bearer = {name: {"Authorization": f"Bearer {token}"} for name, token in
              (("cms", cms), ("desk", desk), ("viewer", viewer))}
    with web.client:
        sitrep_id = _released(web, bearer)
        body = {"text": CORRECTED_TEXT, "note": "It was fourteen."}
        assert web.client.post(f"/api/sitreps/{sitrep_id}/corrections", json=body,
                               headers=bearer["viewer"]).status_code == 403
        made = web.client.post(f"/api/sitreps/{sitrep_id}/corrections", json=body, headers=bearer["cms"])
        assert made.status_code == 201 and made.json()["status"] == "pending", made.text
        assert {"part": "bullet", "sign": "+", "text": made.json()["diff"][1]["text"]} in made.json()["diff"]
        refused = web.client.post(f"/api/sitreps/{sitrep_id}/corrections/approve", headers=bearer["cms"])
        assert refused.status_code == 403 and "two-person rule" in refused.json()["detail"]
        approved = web.client.post(f"/api/sitreps/{sitrep_id}/corrections/approve", headers=bearer["desk"])
        assert approved.status_code == 200 and approved.json()["approved_by"] == "api:desk"
        assert web.client.get(f"/api/sitreps/{sitrep_id}/revisions",
                              headers=bearer["viewer"]).json()[0]["revision"] == 2
        again = web.client.post(f"/api/sitreps/{sitrep_id}/corrections/approve", headers=bearer["desk"])
        assert again.status_code == 409

        # The admin pages: dana corrects, may not approve her own; eli may.
        web.sign_in("dana", PASSWORD)
        detail = web.client.get(f"/admin/sitreps/{sitrep_id}").text
        assert "Save the correction" in detail and 'action="/admin/sitreps/%d/edit"' % sitrep_id not in detail
        edited = web.form(f"/admin/sitreps/{sitrep_id}/edit", {"title": "Other", "event_date": "2025-03-03",
                                                                "bullets": "One", "region": "global"},
                          page=f"/admin/sitreps/{sitrep_id}")
        assert edited.status_code == 409 and "sitrep correct" in edited.text
        text = CORRECTED_TEXT.replace("Insurers raised premiums", "Insurers doubled premiums")
        saved = web.form(f"/admin/sitreps/{sitrep_id}/correct", {"text": text, "note": "Premiums doubled."},
                         page=f"/admin/sitreps/{sitrep_id}", follow_redirects=False)
        assert saved.status_code == 303
        detail = web.client.get(f"/admin/sitreps/{sitrep_id}").text
        assert "awaiting approval" in detail and "Insurers doubled premiums" in detail
        mine = web.form(f"/admin/sitreps/{sitrep_id}/approve-correction", page=f"/admin/sitreps/{sitrep_id}")
        assert mine.status_code == 403 and "two-person rule" in mine.text
        web.sign_in("eli", PASSWORD)
        done = web.form(f"/admin/sitreps/{sitrep_id}/approve-correction", page=f"/admin/sitreps/{sitrep_id}",
                        follow_redirects=False)
        assert done.status_code == 303
        summary = web.client.get(f"/api/sitreps/{sitrep_id}", headers=bearer["viewer"]).json()["summary"]
        assert any("doubled" in bullet for bullet in summary)
        retracted = web.form(f"/admin/sitreps/{sitrep_id}/withdraw", {"reason": "False report.", "retract": "1"},
                             page=f"/admin/sitreps/{sitrep_id}", follow_redirects=False)
        assert retracted.status_code == 303
        listed = web.client.get(f"/api/sitreps/{sitrep_id}/revisions", headers=bearer["viewer"]).json()
        assert [(r["revision"], r["kind"], r["approved_by"]) for r in listed] == [
            (2, "correction", "api:desk"), (3, "correction", "eli"), (4, "retraction", "eli")]


def test_a_correction_may_retag_a_released_sitrep(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    cli = lambda *args: run("--database-url", url, *args)  # noqa: E731
    assert cli("init").exit_code == 0
    assert cli("--as", "ed", "sitrep", "import", STANDARD, "--region", "europe-eurasia").exit_code == 0
    assert cli("--as", "chief", "sitrep", "approve", "1").exit_code == 0
    made = cli("--as", "ed", "sitrep", "correct", "1", "--from-file", STANDARD, "--note", "Also global.",
               "--region", "europe-eurasia,global")
    assert made.exit_code == 0 and "+ regions: europe-eurasia, global" in made.output, made.output
    assert cli("--as", "chief", "sitrep", "approve-correction", "1").exit_code == 0
    assert json.loads(cli("sitrep", "show", "1", "--json").stdout)["regions"] == ["europe-eurasia", "global"]
    same = cli("--as", "ed", "sitrep", "correct", "1", "--from-file", STANDARD, "--note", "again")
    assert same.exit_code == 1 and "nothing to correct" in same.output


def test_run_once_twice_sends_a_correction_once(run, tmp_path, monkeypatch, mail_sink):
    import email
    from email import policy

    monkeypatch.setenv("DISPATCH_TWO_PERSON_RULE", "true")
    monkeypatch.setenv("DISPATCH_SMTP_HOST", mail_sink.host)
    monkeypatch.setenv("DISPATCH_SMTP_PORT", str(mail_sink.port))
    monkeypatch.setenv("DISPATCH_SECRET_KEY", "corrections-test-secret")
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    cli = lambda *args: run("--database-url", url, *args)  # noqa: E731
    corrected = tmp_path / "corrected.txt"
    corrected.write_text(CORRECTED_TEXT, "utf-8")
    assert cli("init").exit_code == 0
    assert cli("subscriber", "add", "now@example.org", "--cadence", "immediate").exit_code == 0
    assert cli("--as", "ed", "sitrep", "import", STANDARD).exit_code == 0
    assert cli("--as", "chief", "sitrep", "approve", "1").exit_code == 0
    assert cli("run", "--once").exit_code == 0
    assert cli("--as", "ed", "sitrep", "correct", "1", "--from-file", corrected, "--note", "Fourteen.").exit_code == 0
    assert cli("--as", "chief", "sitrep", "approve-correction", "1").exit_code == 0
    for _ in range(2):
        assert cli("run", "--once").exit_code == 0
    subjects = [email.message_from_bytes(p.read_bytes(), policy=policy.default)["Subject"]
                for p in sorted((tmp_path / "mail").glob("*.eml"))]
    assert subjects == ["Port Strike Halts Grain Shipments from Odesa",
                        "Correction: Port Strike Halts Grain Shipments from Odesa"]
    logged = json.loads(cli("log", "--json").stdout)
    assert any(row.get("window", row.get("window_key", "")) == "correction:1:2" for row in logged), logged[:2]
