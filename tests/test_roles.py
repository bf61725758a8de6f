"""Roles: every route declares its permission (or is listed public), and
each role gets 403 exactly where its permission is missing, on the admin
pages and the API alike."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter

from dispatch import admins, db
from dispatch.desk import roles
from dispatch.desk.roles import Permission, Role
from dispatch.web import access

from .conftest import FIXTURES
from .webtools import csrf_from

PASSWORD = "correct horse battery"
STANDARD = (FIXTURES / "standard.txt").read_text("utf-8")
NO_SUCH = "999999"  # every id in a route: nothing is changed by the matrix


def test_each_role_holds_what_the_issue_says():
    assert roles.GRANTS[Role.viewer] == {Permission.read}
    assert roles.allows(Role.editor, Permission.edit) and roles.allows(Role.editor, Permission.subscribers)
    assert not roles.allows(Role.editor, Permission.approve)
    assert roles.allows(Role.approver, Permission.approve) and not roles.allows(Role.approver, Permission.edit)
    assert all(roles.allows(Role.admin, p) for p in Permission)
    assert not roles.allows("owner", Permission.read)  # an unknown role may do nothing
    assert "viewer" in roles.refusal(Role.viewer, Permission.approve)


def test_every_route_declares_a_role_or_is_listed_public(web):
    app = web.client.app
    assert access.undeclared_routes(app) == []
    paths = {getattr(r, "path", None) for r in access.all_routes(app)}
    # The public list is kept honest: nothing in it is an admin page or API route but sign-in and docs.
    for path in access.PUBLIC_PATHS:
        assert not path.startswith("/admin/") or path == "/admin/login"
    assert {"/", "/subscribe", "/admin/login"} <= paths


def test_a_route_added_without_a_role_is_caught(web):
    app = web.client.app
    extra = APIRouter(prefix="/admin")

    @extra.get("/bounces")
    def bounces():  # pragma: no cover - never called
        return {}

    app.include_router(extra)
    assert access.undeclared_routes(app) == ["GET /admin/bounces"]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", NO_SUCH, path)


def _guarded(app):
    for route in access.all_routes(app):
        needed = access.declared_permissions(route)
        if needed and route.path != "/admin/logout":
            for method in sorted(route.methods - {"HEAD"}):
                yield method, route.path, needed


@pytest.mark.parametrize("role", list(Role))
def test_web_pages_answer_403_exactly_where_the_role_lacks_the_permission(web, role):
    with db.session_scope(web.engine) as session:
        admins.create_admin(session, f"desk-{role.value}", PASSWORD, role=role)
    web.sign_in(f"desk-{role.value}", PASSWORD)
    token = csrf_from(web.client.get("/admin").text)
    checked = 0
    for method, path, needed in _guarded(web.client.app):
        if not path.startswith("/admin"):
            continue
        data = {"csrf_token": token} if method == "POST" else None
        response = web.client.request(method, _concrete(path), data=data, follow_redirects=False)
        allowed = all(roles.allows(role, p) for p in needed)
        assert (response.status_code == 403) == (not allowed), (role, method, path, response.status_code)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("role", list(Role))
def test_api_answers_403_exactly_where_the_role_lacks_the_permission(web, role):
    with db.session_scope(web.engine) as session:
        _, secret = admins.create_token(session, f"cms-{role.value}", role=role)
    headers = {"Authorization": f"Bearer {secret}"}
    checked = 0
    for method, path, needed in _guarded(web.client.app):
        if not path.startswith("/api/"):
            continue
        response = web.client.request(method, _concrete(path), headers=headers, json={})
        allowed = all(roles.allows(role, p) for p in needed)
        assert (response.status_code == 403) == (not allowed), (role, method, path, response.status_code)
        checked += 1
    assert checked >= 12


def test_the_desk_split_on_the_api(web):
    with db.session_scope(web.engine) as session:
        tokens = {r: admins.create_token(session, f"t-{r.value}", role=r)[1] for r in Role}
    bearer = lambda r: {"Authorization": f"Bearer {tokens[r]}"}  # noqa: E731
    assert web.client.post("/api/sitreps", json={"text": STANDARD}, headers=bearer(Role.approver)).status_code == 403
    # An editor may import, but not import-and-approve in one call.
    assert web.client.post("/api/sitreps", json={"text": STANDARD, "approve": True},
                           headers=bearer(Role.editor)).status_code == 403
    created = web.client.post("/api/sitreps", json={"text": STANDARD}, headers=bearer(Role.editor))
    sitrep_id = created.json()["sitrep"]["id"]
    for role in (Role.viewer, Role.editor):
        refused = web.client.post(f"/api/sitreps/{sitrep_id}/approve", headers=bearer(role))
        assert refused.status_code == 403 and role.value in refused.json()["detail"]
    assert web.client.get(f"/api/sitreps/{sitrep_id}", headers=bearer(Role.viewer)).json()["status"] == "draft"
    approved = web.client.post(f"/api/sitreps/{sitrep_id}/approve", headers=bearer(Role.approver))
    assert approved.status_code == 200, approved.text


def test_pages_show_only_what_the_role_may_do(web):
    with db.session_scope(web.engine) as session:
        admins.create_admin(session, "viewer1", PASSWORD, role=Role.viewer)
        admins.create_admin(session, "approver1", PASSWORD, role=Role.approver)
        admins.create_admin(session, "editor1", PASSWORD, role=Role.editor)
    web.sign_in("editor1", PASSWORD)
    assert 'href="/admin/sitreps/new"' in web.client.get("/admin/sitreps").text
    new_page = web.client.get("/admin/sitreps/new").text
    assert 'name="approve"' not in new_page  # an editor cannot approve at import
    imported = web.form("/admin/sitreps/new", {"text": STANDARD}, follow_redirects=False)
    detail = imported.headers["location"]
    assert "/approve" not in web.client.get(detail).text and "/edit" in web.client.get(detail).text
    web.sign_in("viewer1", PASSWORD)
    viewer_page = web.client.get(detail).text
    assert "/approve" not in viewer_page and "/edit" not in viewer_page
    assert 'href="/admin/sitreps/new"' not in web.client.get("/admin/sitreps").text
    assert "Add a subscriber" not in web.client.get("/admin/subscribers").text
    web.sign_in("approver1", PASSWORD)
    approver_page = web.client.get(detail).text
    assert "/approve" in approver_page and "/edit" not in approver_page


def test_cli_makes_users_and_tokens_with_a_role(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'roles.db'}"
    assert run("--database-url", url, "init").exit_code == 0
    made = run("--database-url", url, "admin", "create", "eve", "--role", "approver", "--password-stdin",
               input=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    assert run("--database-url", url, "admin", "token", "cms", "--role", "editor").exit_code == 0
    bad = run("--database-url", url, "admin", "token", "x", "--role", "owner")
    assert bad.exit_code == 2 and "--role" in bad.output
    assert '"role": "approver"' in run("--database-url", url, "admin", "list", "--json").output
    assert '"role": "editor"' in run("--database-url", url, "admin", "tokens", "--json").output


def test_existing_users_and_tokens_become_admin_by_migration(database_url):
    import sqlalchemy as sa

    engine = db.create_engine(database_url)
    db.upgrade(engine, "0011")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO admin_user (username, password_hash, session_nonce, created_at) "
                             "VALUES ('old', 'x', 'n', CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO api_token (name, token_hash, created_at) "
                             "VALUES ('old', 'h', CURRENT_TIMESTAMP)"))
    db.upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT role FROM admin_user")).scalar_one() == "admin"
        assert conn.execute(sa.text("SELECT role FROM api_token")).scalar_one() == "admin"
    engine.dispose()
