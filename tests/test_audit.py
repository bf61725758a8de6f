"""The audit log: every change is a row with the right actor, whichever face made it."""

from __future__ import annotations

import json

from dispatch import admins, db, subscribers
from dispatch.desk import audit
from dispatch.desk.roles import Role
from sqlmodel import select

from dispatch.models import AuditEntry, SubscriberStatus

from .conftest import FIXTURES

PASSWORD = "correct horse battery"
STANDARD = FIXTURES / "standard.txt"


def _entries(run, url, *args) -> list[dict]:
    result = run("--database-url", url, "audit", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_names_its_actor_with_as_or_dispatch_actor(run, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert run("--database-url", url, "init").exit_code == 0
    assert run("--database-url", url, "--as", "ana", "sitrep", "import", STANDARD).exit_code == 0
    approved = run("--database-url", url, "sitrep", "approve", "1", "--as", "bob")
    assert approved.exit_code == 0, approved.output
    monkeypatch.setenv("DISPATCH_ACTOR", "carol")
    assert run("--database-url", url, "subscriber", "add", "reader@example.org").exit_code == 0
    rows = _entries(run, url)
    by_action = {(r["action"], r["target"]): r for r in rows}
    assert (by_action[("sitrep.created", "sitrep:1")]["actor_kind"], by_action[("sitrep.created", "sitrep:1")]["actor"]) == ("cli", "ana")
    approval = by_action[("sitrep.approved", "sitrep:1")]
    assert approval["actor"] == "bob" and approval["changes"]["status"] == ["draft", "approved"]
    assert any(r["action"] == "subscriber.created" and r["actor"] == "carol" for r in rows)
    assert {r["actor"] for r in _entries(run, url, "--actor", "bob")} == {"bob"}
    assert {r["target"] for r in _entries(run, url, "--target", "sitrep:1")} == {"sitrep:1"}
    # The SITREP's own history names the same people.
    shown = json.loads(run("--database-url", url, "sitrep", "show", "1", "--json").stdout)
    assert [(c["actor"], c["action"]) for c in shown["changes"]] == [("ana", "imported"), ("bob", "approved")]
    bad = run("--database-url", url, "audit", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_web_and_api_changes_carry_the_user_and_the_token(web):
    with db.session_scope(web.engine) as session:
        admins.create_admin(session, "ed", PASSWORD, role=Role.editor)
        _, secret = admins.create_token(session, "cms", role=Role.approver)
    web.sign_in("ed", PASSWORD)
    imported = web.form("/admin/sitreps/new", {"text": STANDARD.read_text("utf-8")}, follow_redirects=False)
    sitrep_id = int(imported.headers["location"].rsplit("/", 1)[1])
    headers = {"Authorization": f"Bearer {secret}"}
    assert web.client.post(f"/api/sitreps/{sitrep_id}/approve", headers=headers).status_code == 200
    listed = web.client.get(f"/api/audit?target=sitrep:{sitrep_id}", headers=headers).json()["items"]
    assert [(e["actor_kind"], e["actor"], e["action"]) for e in listed] == [
        ("token", "cms", "sitrep.approved"), ("user", "ed", "sitrep.created")]
    page = web.client.get("/admin/audit?actor=ed").text
    assert "user:ed" in page and "sitrep.created" in page and "token:cms" not in page


def test_changes_outside_any_face_are_the_systems_and_secrets_are_not_copied(session):
    admin = admins.create_admin(session, "root", PASSWORD)
    added = subscribers.add_subscriber(session, "b@example.org")
    added.status = SubscriberStatus.bounced  # as a bounce would
    session.flush()
    with audit.acting_as(audit.Actor("cli", "dee")):
        admins.set_password(session, "root", PASSWORD + " again")
    rows = session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
    bounced = next(r for r in rows if r.action == "subscriber.bounced")
    assert (bounced.actor_kind, bounced.changes["status"]) == ("system", ["active", "bounced"])
    changed = next(r for r in rows if r.action == "admin.changed")
    assert changed.actor == "dee" and changed.target == f"admin:{admin.id}"
    assert changed.changes["password_hash"] == ["(secret)", "(changed)"]
    assert not any(admin.password_hash in json.dumps(r.changes) for r in rows)


def test_a_readers_own_unsubscribe_is_the_readers(web):
    from dispatch import links

    with db.session_scope(web.engine) as session:
        reader = subscribers.add_subscriber(session, "r@example.org")
        token = links.make_token("web-test-secret", subscriber_id=reader.id, address=reader.address,
                                 purpose="unsubscribe")
        reader_id = reader.id
    done = web.client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200, done.text
    with db.session_scope(web.engine) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.target == f"subscriber:{reader_id}")
                            .order_by(AuditEntry.id)).all()
        assert [(r.actor_kind, r.action) for r in rows] == [("system", "subscriber.created"),
                                                             ("reader", "subscriber.unsubscribed")]


def test_event_webhooks_are_audited_without_their_secret(session):
    """A webhook may be sent readers' addresses: who added or removed one is
    on record, and its signing secret is not."""
    from dispatch.events import endpoints

    with audit.acting_as(audit.Actor("cli", "ops")):
        hook = endpoints.add(session, "https://hooks.example.org/in", events=["subscriber.created"])
        session.flush()
        endpoints.remove(session, hook.id)
        session.flush()
    rows = session.exec(select(AuditEntry).where(AuditEntry.target == f"webhook:{hook.id}")
                        .order_by(AuditEntry.id)).all()
    assert [(r.actor, r.action) for r in rows] == [("ops", "webhook.created"), ("ops", "webhook.removed")]
    assert not any(hook.secret in json.dumps(r.changes) for r in rows)
