"""Embargo: approved for a later instant, nothing is planned before it
(digests and immediate fan-out alike); released early, or cancelled."""

from __future__ import annotations

import email
import json
from datetime import datetime, timedelta, timezone
from email import policy

import pytest

from dispatch import admins, db

from .conftest import FIXTURES

STANDARD = FIXTURES / "standard.txt"


def _mails(folder):
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(folder.glob("*.eml"))]


@pytest.fixture
def cli(run, tmp_path, monkeypatch, mail_sink):
    monkeypatch.setenv("DISPATCH_SMTP_HOST", mail_sink.host)
    monkeypatch.setenv("DISPATCH_SMTP_PORT", str(mail_sink.port))
    monkeypatch.setenv("DISPATCH_SECRET_KEY", "embargo-test-secret")
    url = f"sqlite:///{tmp_path / 'embargo.db'}"
    invoke = lambda *args: run("--database-url", url, *args)  # noqa: E731
    assert invoke("init").exit_code == 0
    assert invoke("subscriber", "add", "now@example.org", "--cadence", "immediate").exit_code == 0
    assert invoke("subscriber", "add", "daily@example.org", "--cadence", "daily", "--at", "07:00").exit_code == 0
    assert invoke("--as", "ed", "sitrep", "import", STANDARD).exit_code == 0
    return invoke


def test_nothing_is_sent_before_the_release_and_everything_after(cli, tmp_path):
    release = (datetime.now(timezone.utc) + timedelta(days=1)).replace(second=0, microsecond=0)
    approved = cli("--as", "chief", "sitrep", "approve", "1", "--release-at", release.strftime("%Y-%m-%dT%H:%MZ"))
    assert approved.exit_code == 0 and "scheduled for" in approved.output, approved.output
    assert "scheduled for" in cli("sitrep", "list").output
    assert json.loads(cli("sitrep", "show", "1", "--json").stdout)["scheduled_for"] == release.isoformat()
    before = release - timedelta(minutes=1)
    assert cli("run", "--once", "--now", before.isoformat()).exit_code == 0
    # The daily windows up to it did not carry it, and the immediate reader waited too.
    assert cli("run", "--once", "--now", (before + timedelta(seconds=30)).isoformat()).exit_code == 0
    assert _mails(tmp_path / "mail") == []
    after = release + timedelta(days=1, hours=1)
    assert cli("run", "--once", "--now", after.isoformat()).exit_code == 0
    assert sorted(m["To"] for m in _mails(tmp_path / "mail")) == ["daily@example.org", "now@example.org"]


def test_release_early_and_cancel(cli, tmp_path):
    release = datetime.now(timezone.utc) + timedelta(days=3)
    assert cli("--as", "chief", "sitrep", "approve", "1", "--release-at", release.isoformat()).exit_code == 0
    assert cli("--as", "chief", "sitrep", "release", "1").exit_code == 0
    assert json.loads(cli("sitrep", "show", "1", "--json").stdout)["scheduled_for"] is None
    assert cli("run", "--once").exit_code == 0
    assert [m["To"] for m in _mails(tmp_path / "mail")] == ["now@example.org"]
    again = cli("sitrep", "release", "1")
    assert again.exit_code == 1 and "not under embargo" in again.output
    past = cli("sitrep", "approve", "1", "--release-at", "2020-01-01T00:00Z")
    assert past.exit_code != 0


def test_cancelled_release_goes_back_to_draft_and_is_never_sent(cli, tmp_path):
    release = datetime.now(timezone.utc) + timedelta(hours=2)
    assert cli("--as", "chief", "sitrep", "approve", "1", "--release-at", release.isoformat()).exit_code == 0
    assert cli("--as", "chief", "sitrep", "release", "1", "--cancel").exit_code == 0
    assert json.loads(cli("sitrep", "show", "1", "--json").stdout)["status"] == "draft"
    assert cli("run", "--once", "--now", (release + timedelta(days=2)).isoformat()).exit_code == 0
    assert _mails(tmp_path / "mail") == []
    past = cli("--as", "chief", "sitrep", "approve", "1", "--release-at", "2020-01-01T00:00Z")
    assert past.exit_code == 2 and "release-at" in past.output


def test_web_and_api_embargo(web):
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
    bearer = {"Authorization": f"Bearer {token}"}
    sitrep_id = web.client.post("/api/sitreps", json={"text": STANDARD.read_text("utf-8")},
                                headers=bearer).json()["sitrep"]["id"]
    release = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0)
    approved = web.client.post(f"/api/sitreps/{sitrep_id}/approve", params={"release_at": release.isoformat()},
                               headers=bearer)
    assert approved.status_code == 200 and approved.json()["scheduled_for"] == release.isoformat()
    web.sign_in()
    assert "scheduled for" in web.client.get("/admin/sitreps").text
    detail = web.client.get(f"/admin/sitreps/{sitrep_id}").text
    assert "Release now" in detail and "Cancel the release" in detail
    web.form(f"/admin/sitreps/{sitrep_id}/release", page=f"/admin/sitreps/{sitrep_id}")
    assert web.client.get(f"/api/sitreps/{sitrep_id}", headers=bearer).json()["scheduled_for"] is None
    assert web.client.post(f"/api/sitreps/{sitrep_id}/release", headers=bearer).status_code == 409


def _approved_events(tmp_path) -> list[dict]:
    import sqlite3

    with sqlite3.connect(tmp_path / "embargo.db") as connection:
        rows = connection.execute("SELECT payload FROM event WHERE type = 'sitrep.approved' ORDER BY created_at")
        return [json.loads(payload) for (payload,) in rows]


def test_sitrep_approved_reaches_event_webhooks_at_the_release_not_at_the_approval(cli, tmp_path):
    """A receiver that publishes on sitrep.approved must not hear of an
    embargoed SITREP early: the event is emitted when it comes out."""
    assert cli("webhook", "add", "https://hooks.example.org/in", "--event", "sitrep.approved").exit_code == 0
    release = (datetime.now(timezone.utc) + timedelta(days=1)).replace(second=0, microsecond=0)
    assert cli("--as", "chief", "sitrep", "approve", "1", "--release-at", release.isoformat()).exit_code == 0
    assert _approved_events(tmp_path) == []
    assert cli("run", "--once", "--now", (release - timedelta(minutes=1)).isoformat()).exit_code == 0
    assert _approved_events(tmp_path) == []
    assert cli("run", "--once", "--now", (release + timedelta(minutes=1)).isoformat()).exit_code == 0
    assert cli("run", "--once", "--now", (release + timedelta(minutes=2)).isoformat()).exit_code == 0
    assert [e["data"]["sitrep_id"] for e in _approved_events(tmp_path)] == [1]


def test_a_release_early_emits_sitrep_approved_once(cli, tmp_path):
    assert cli("webhook", "add", "https://hooks.example.org/in", "--event", "sitrep.approved").exit_code == 0
    release = datetime.now(timezone.utc) + timedelta(days=3)
    assert cli("--as", "chief", "sitrep", "approve", "1", "--release-at", release.isoformat()).exit_code == 0
    assert _approved_events(tmp_path) == []
    assert cli("--as", "chief", "sitrep", "release", "1").exit_code == 0
    assert cli("run", "--once").exit_code == 0
    assert [e["data"]["sitrep_id"] for e in _approved_events(tmp_path)] == [1]
