"""What the web refuses: anonymous requests to every admin page and API
route, forms without their CSRF token, password guessing, markup in stored
text, and cookies without their flags."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from dispatch import db, sitreps, subscribers
from dispatch.models import SitrepStatus
from dispatch.sitrep_text import parse
from dispatch.web.security import Throttle

from .conftest import FIXTURES

PUBLIC_DOCS = {"/api/docs", "/api/openapi.json", "/docs/oauth2-redirect"}  # documentation, no data


def all_routes(routes):
    """Every route of the app, inside included routers too (FastAPI ≥ 0.120
    wraps an included router; its routes carry their full paths)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from all_routes(inner.routes)
        elif isinstance(route, Route):
            yield route


def protected_routes(app):
    for route in all_routes(app.routes):
        path = route.path
        if path in PUBLIC_DOCS or path in ("/admin/login",):
            continue
        if path.startswith(("/admin", "/api")):
            for method in sorted(route.methods - {"HEAD"}):
                yield method, re.sub(r"\{[^}]+\}", "1", path)


def test_every_admin_page_and_api_route_refuses_an_anonymous_request(web):
    # Something to find at id 1, so a pass cannot come from a 404.
    with db.session_scope(web.engine) as session:
        sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text("utf-8")), actor="t")
        subscribers.add_subscriber(session, "someone@example.org")
    routes = list(protected_routes(web.client.app))
    assert len(routes) > 30  # the walk really walks
    for method, path in routes:
        response = web.client.request(method, path, follow_redirects=False)
        if path.startswith("/api"):
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"] == "Bearer"
        else:
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/admin/login")
    with db.session_scope(web.engine) as session:  # and nothing changed
        assert sitreps.get(session, 1).status == SitrepStatus.draft
        assert subscribers.get(session, 1).address == "someone@example.org"


def test_a_wrong_or_revoked_api_token_is_refused(web):
    from dispatch import admins
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
    assert web.client.get("/api/sitreps", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert web.client.get("/api/sitreps", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    assert web.client.get("/api/sitreps", headers={"Authorization": f"Basic {token}"}).status_code == 401
    with db.session_scope(web.engine) as session:
        admins.revoke_token(session, "cms")
    assert web.client.get("/api/sitreps", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_an_admin_session_is_no_api_token_and_a_token_opens_no_admin_page(web):
    from dispatch import admins
    web.sign_in()
    assert web.client.get("/api/sitreps").status_code == 401
    web.client.cookies.clear()
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
    response = web.client.get("/admin", headers={"Authorization": f"Bearer {token}"}, follow_redirects=False)
    assert response.status_code == 303


def form_posts(app):
    for route in all_routes(app.routes):
        # The provider webhooks are no forms: they prove themselves by signature (test_provider_webhooks).
        if isinstance(route, APIRoute) and "POST" in route.methods and \
                not route.path.startswith(("/api", "/webhooks/")):
            yield re.sub(r"\{[^}]+\}", "1", route.path)


def test_every_form_post_without_or_with_a_wrong_csrf_token_is_refused(web):
    web.sign_in()
    with db.session_scope(web.engine) as session:
        sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text("utf-8")), actor="t")
        subscribers.add_subscriber(session, "someone@example.org")
    paths = list(form_posts(web.client.app))
    assert "/admin/sitreps/1/approve" in paths and "/subscribe" in paths
    for path in paths:
        if path == "/admin/logout":
            continue  # checked last: it would end the session
        for data in ({}, {"csrf_token": "forged"}):
            response = web.client.post(path, data=data, follow_redirects=False)
            assert response.status_code in (403, 400), (path, data, response.status_code)
    with db.session_scope(web.engine) as session:
        assert sitreps.get(session, 1).status == SitrepStatus.draft
        assert subscribers.get(session, 1).address == "someone@example.org"
    assert web.client.post("/admin/logout", data={}).status_code == 403
    assert web.client.get("/admin", follow_redirects=False).status_code == 200  # still signed in


def test_failed_logins_are_throttled_then_allowed_again(web):
    clock = [1000.0]
    web.client.app.state.login_throttle = Throttle(limit=3, window=600, clock=lambda: clock[0])
    web.sign_in()
    web.form("/admin/logout", page="/admin")
    for _ in range(3):
        assert web.form("/admin/login", {"username": "editor", "password": "guess"}).status_code == 401
    blocked = web.form("/admin/login", {"username": "editor", "password": "correct horse battery"})
    assert blocked.status_code == 429 and "Too many sign-in attempts" in blocked.text
    assert int(blocked.headers["retry-after"]) > 0
    clock[0] += 601
    web.sign_in()


def test_stored_markup_renders_as_text_everywhere(web):
    web.sign_in()
    script = "<script>alert(1)</script>"
    text = (FIXTURES / "standard.txt").read_text("utf-8").replace(
        "Port Strike Halts Grain Shipments from Odesa", f"Port Strike {script}")
    web.form("/admin/sitreps/new", {"text": text})
    with db.session_scope(web.engine) as session:
        subscribers.add_subscriber(session, "x@example.org", prefs=subscribers.Preferences(name=f"Eve {script}"))
    for path in ("/admin", "/admin/sitreps", "/admin/sitreps/1", "/admin/sitreps/1/preview", "/admin/subscribers",
                 "/admin/subscribers/1"):
        page = web.client.get(path).text
        assert script not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in web.client.get("/admin/sitreps").text


@pytest.mark.parametrize("public_url, secure", [("http://testserver/", False), ("https://news.example.org/", True)])
def test_the_session_cookie_is_httponly_samesite_and_secure_over_https(database_url, engine, mail_sink, tmp_path,
                                                                       public_url, secure):
    from fastapi.testclient import TestClient

    from dispatch.web import create_app
    from tests.webtools import settings_for

    app = create_app(settings_for(database_url, mail_sink, public_url=public_url), engine)
    cookie = TestClient(app).get("/subscribe").headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert ("secure" in cookie.lower()) == secure


def test_unknown_pages_and_bad_ids_get_clear_answers(web):
    web.sign_in()
    assert web.client.get("/admin/sitreps/999").status_code == 404
    assert "no SITREP with id 999" in web.client.get("/admin/sitreps/999").text
    assert web.client.get("/admin/sitreps/abc").status_code == 422
    assert web.client.get("/admin/deliveries/999").status_code == 404


def test_subscribe_requests_are_limited_per_address_and_client(web):
    clock = [0.0]
    web.client.app.state.signup_throttle = Throttle(limit=2, window=3600, clock=lambda: clock[0])
    for _ in range(2):
        assert web.form("/subscribe", {"email": "victim@example.org"}).status_code == 200
    refused = web.form("/subscribe", {"email": "victim@example.org"})
    assert refused.status_code == 429 and "Too many subscribe requests" in refused.text
    assert web.form("/subscribe", {"email": "other@example.org"}).status_code == 429  # same client
    assert len(web.mails()) == 2
    clock[0] += 3601
    assert web.form("/subscribe", {"email": "victim@example.org"}).status_code == 200


def test_an_oversized_request_is_refused_before_it_is_read(web):
    from dispatch.web.app import MAX_BODY_BYTES
    web.sign_in()
    response = web.client.post("/admin/subscribers/import", content=b"x" * (MAX_BODY_BYTES + 1),
                               headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413 and "larger than" in response.text
