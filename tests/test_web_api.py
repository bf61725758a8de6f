"""The JSON API with a bearer token: what a CMS would do."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dispatch import admins, db, ledger
from dispatch.digest import Window

from .conftest import FIXTURES

STANDARD = (FIXTURES / "standard.txt").read_text("utf-8")


@pytest.fixture
def api(web):
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
    web.client.headers["Authorization"] = f"Bearer {token}"
    return web.client


def test_push_a_sitrep_approve_it_and_read_it_back(api):
    created = api.post("/api/sitreps", json={"text": STANDARD})
    assert created.status_code == 201
    sitrep = created.json()["sitrep"]
    assert sitrep["status"] == "draft" and sitrep["commentary"][0]["analyst"] == "Dana Whitfield"
    again = api.post("/api/sitreps", json={"text": STANDARD})
    assert again.status_code == 200 and again.json()["created"] is False
    approved = api.post(f"/api/sitreps/{sitrep['id']}/approve")
    assert approved.status_code == 200 and approved.json()["approved_by"] == "api:cms"
    assert api.post(f"/api/sitreps/{sitrep['id']}/approve").status_code == 409
    assert [s["id"] for s in api.get("/api/sitreps?status=approved").json()["items"]] == [sitrep["id"]]
    assert api.get("/api/sitreps?q=odesa").json()["items"][0]["id"] == sitrep["id"]
    assert api.get(f"/api/sitreps/{sitrep['id']}").json()["changes"][-1]["action"] == "approved"


def test_push_and_approve_at_once_with_regions(api):
    body = api.post("/api/sitreps", json={"text": STANDARD, "approve": True, "regions": ["global"]}).json()
    assert body["sitrep"]["status"] == "approved" and body["sitrep"]["regions"] == ["global"]


def test_bad_sitreps_get_clear_errors(api):
    bad = api.post("/api/sitreps", json={"text": (FIXTURES / "bad_date.txt").read_text("utf-8")})
    assert bad.status_code == 400 and "date" in bad.json()["detail"]
    assert api.post("/api/sitreps", json={}).status_code == 422
    assert api.post("/api/sitreps", json={"text": "x" * 300_000}).status_code == 422
    assert api.post("/api/sitreps/999/approve").json()["detail"] == "no SITREP with id 999"


def test_subscribers_list_add_update_remove(api):
    added = api.post("/api/subscribers", json={"address": "ana@example.org", "regions": ["americas"],
                                               "cadence": "weekly", "weekday": "friday", "timezone": "America/Lima"})
    assert added.status_code == 201, added.text
    ana = added.json()
    assert (ana["status"], ana["regions"], ana["weekday"], ana["tz"]) == ("active", ["americas"], "friday",
                                                                           "America/Lima")
    channel = api.post("/api/subscribers", json={"kind": "slack", "address": "C0123ABCD", "cadence": "immediate"})
    assert channel.status_code == 201
    assert api.post("/api/subscribers", json={"address": "ana@example.org"}).status_code == 409
    bad = api.post("/api/subscribers", json={"address": "ana@", "timezone": "UTC"})
    assert bad.status_code == 400 and "not a valid address" in bad.json()["detail"]
    assert api.post("/api/subscribers", json={"address": "b@example.org", "timezone": "Nowhere/Town"}).status_code == 400
    assert [s["address"] for s in api.get("/api/subscribers?kind=slack").json()["items"]] == ["C0123ABCD"]
    changed = api.patch(f"/api/subscribers/{ana['id']}", json={"regions": [], "status": "disabled"})
    assert changed.status_code == 200
    assert (changed.json()["regions"], changed.json()["status"], changed.json()["cadence"]) == ([], "disabled", "weekly")
    assert api.get("/api/subscribers/ana@example.org").json()["id"] == ana["id"]
    assert api.delete(f"/api/subscribers/{ana['id']}").status_code == 204
    assert api.get(f"/api/subscribers/{ana['id']}").status_code == 404


def test_the_delivery_log(api, web):
    sitrep_id = api.post("/api/sitreps", json={"text": STANDARD, "approve": True}).json()["sitrep"]["id"]
    reader = api.post("/api/subscribers", json={"address": "ana@example.org"}).json()
    with db.session_scope(web.engine) as session:
        now = datetime.now(timezone.utc)
        ledger.plan(session, reader["id"], [Window("daily:test", now, now, (sitrep_id,))], now=now)
    log = api.get("/api/deliveries").json()["items"]
    assert [(d["address"], d["sitreps"], d["status"]) for d in log] == [("ana@example.org", [sitrep_id], "pending")]
    assert api.get(f"/api/deliveries?sitrep={sitrep_id}&subscriber=ana@example.org").json()["items"] == log
    assert api.get(f"/api/deliveries?sitrep={sitrep_id + 1}").json() == {"items": [], "next": None}
    assert api.get("/api/deliveries?since=2999-01-01T00:00:00").json()["items"] == []
    one = api.get(f"/api/deliveries/{log[0]['id']}").json()
    assert one["window"] == "daily:test" and one["attempts_log"] == []
    assert api.get("/api/deliveries/999").status_code == 404


def test_the_openapi_page_documents_the_api(web):
    schema = web.client.get("/api/openapi.json").json()
    assert {"/api/sitreps", "/api/sitreps/{sitrep_id}/approve", "/api/subscribers", "/api/deliveries"} <= set(
        schema["paths"])
    assert not any(p.startswith("/admin") for p in schema["paths"])
    assert "bearer" in str(schema["components"]["securitySchemes"]).lower()
    assert web.client.get("/api/docs").status_code == 200


def test_withdraw_through_the_api(api):
    sitrep_id = api.post("/api/sitreps", json={"text": STANDARD, "approve": True}).json()["sitrep"]["id"]
    withdrawn = api.post(f"/api/sitreps/{sitrep_id}/withdraw", params={"reason": "superseded"})
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert api.get(f"/api/sitreps/{sitrep_id}").json()["changes"][-1]["detail"] == "superseded"
    assert api.post(f"/api/sitreps/{sitrep_id}/withdraw").status_code == 409


def test_invalid_bodies_get_a_readable_422(api):
    response = api.post("/api/subscribers", json={"address": "a@example.org", "cadence": "hourly"})
    assert response.status_code == 422
    assert "cadence" in response.json()["detail"] and response.json()["errors"][0]["loc"][-1] == "cadence"
    assert api.post("/api/sitreps", content=b"not json", headers={"Content-Type": "application/json"}).status_code == 422
