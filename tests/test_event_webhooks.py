"""Event webhooks: signed with the Standard Webhooks scheme (verified with
the `standardwebhooks` package), delivered through the ledger, retried with
backoff under the same event id, and never in the way of an email."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import col, select
from standardwebhooks.webhooks import Webhook

from dispatch import admins, db, subscribers
from dispatch.config import Settings
from dispatch.events import emit, endpoints, sender as event_sender, signing
from dispatch.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, SubscriberStatus, utcnow
from dispatch.retry import RetryPolicy
from dispatch.scheduler import Runner
from dispatch.web import create_app

from .deliverytools import LATER, Clock, seed
from .webtools import settings_for


class Receiver:
    """A real HTTP endpoint on loopback: keeps every POST; answers with the
    next of ``statuses`` (then 200); with ``hold`` set, holds each request
    until it is released."""

    def __init__(self):
        self.posts: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []
        self.hold = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.hold.is_set():
                    receiver.held.set()
                    receiver.release.wait(30)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a held request cut at shutdown is expected
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/dispatch"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def verified(self, secret: str) -> list[dict]:
        """Every post's payload, each signature checked by the reference library."""
        return [Webhook(secret).verify(body, headers) for headers, body in self.posts]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


# The receivers here are on loopback, which dispatch refuses unless the operator lists it.
LOOPBACK = ("127.0.0.1/32",)


def runner_for(database_url, engine, sink, clock) -> Runner:
    settings = Settings(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port,
                        outbound_private_networks=LOOPBACK,
                        mail_from="news@example.org", secret_key=SecretStr("k"), sender_threads=1)
    return Runner(settings, engine, clock=clock)


def add_hook(engine, url, *events) -> tuple[int, str]:
    with db.session_scope(engine) as session:
        hook = endpoints.add(session, url, events=events, private_networks=LOOPBACK)
        return hook.id, hook.secret


def event_rows(engine) -> list[Delivery]:
    with db.session_scope(engine) as session:
        return list(session.exec(select(Delivery).where(col(Delivery.webhook_id).is_not(None))
                                 .order_by(col(Delivery.id))).all())


def test_events_are_signed_and_sent_after_the_emails(database_url, engine, mail_sink, receiver):
    _, secret = add_hook(engine, receiver.url, "sitrep.approved", "subscriber.created", "delivery.sent")
    seed(engine, ["ana@example.org", "ben@example.org"])
    runner = runner_for(database_url, engine, mail_sink, Clock(LATER))
    summary = runner.run_once()
    runner.close()
    assert summary.by_status["sent"] == 2

    payloads = receiver.verified(secret)  # raises on a bad signature
    assert Counter(p["type"] for p in payloads) == {"subscriber.created": 2, "sitrep.approved": 1,
                                                    "delivery.sent": 2}
    for (headers, _), payload in zip(receiver.posts, payloads):
        assert headers["webhook-id"] == payload["id"] and payload["id"].startswith("evt_")
    sent = [p["data"] for p in payloads if p["type"] == "delivery.sent"]
    assert sorted(d["receipt"] for d in sent) == sorted(
        r.receipt for r in _digests(engine) if r.status == DeliveryStatus.sent)
    assert all(r.status == DeliveryStatus.sent and r.receipt == "HTTP 200" for r in event_rows(engine))
    # The scheme as documented, by hand: v1,<base64 HMAC-SHA256 of id.timestamp.body>.
    headers, body = receiver.posts[0]
    assert headers["webhook-signature"] == signing.sign(
        secret, msg_id=headers["webhook-id"], timestamp=int(headers["webhook-timestamp"]), body=body)


def _digests(engine) -> list[Delivery]:
    with db.session_scope(engine) as session:
        return list(session.exec(select(Delivery).where(col(Delivery.subscriber_id).is_not(None))).all())


def test_a_failing_endpoint_is_retried_with_backoff_under_the_same_event_id(database_url, engine, mail_sink,
                                                                            receiver):
    add_hook(engine, receiver.url, "sitrep.approved")
    seed(engine, ["ana@example.org"])
    receiver.statuses = [503]
    runner = runner_for(database_url, engine, mail_sink, Clock(LATER))
    assert runner.run_once().by_status["sent"] == 1  # the email went; the event did not
    runner.close()
    (row,) = event_rows(engine)
    assert row.status == DeliveryStatus.pending and row.attempts == 1 and row.last_error == "HTTP 503"

    clock = Clock(utcnow())
    events = event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=8), clock=clock,
                                      private_networks=LOOPBACK)
    assert row.next_attempt_at > clock.now and events.drain() == 0  # backing off: not due yet
    assert len(receiver.posts) == 1
    clock.now = row.next_attempt_at + timedelta(seconds=1)
    assert events.drain() == 1
    (row,) = event_rows(engine)
    assert row.status == DeliveryStatus.sent and row.attempts == 2
    first, second = (headers["webhook-id"] for headers, _ in receiver.posts)
    assert first == second  # at-least-once, and the receiver can tell the repeat
    with db.session_scope(engine) as session:
        outcomes = [a.outcome for a in session.exec(select(DeliveryAttempt).where(
            DeliveryAttempt.delivery_id == row.id).order_by(col(DeliveryAttempt.id))).all()]
    assert outcomes == ["retry", "sent"]


@pytest.mark.parametrize("status", [302, 410])
def test_a_redirect_or_gone_fails_without_retry(database_url, engine, mail_sink, receiver, status):
    add_hook(engine, receiver.url, "sitrep.approved")
    seed(engine, ["ana@example.org"])
    receiver.statuses = [status]
    runner = runner_for(database_url, engine, mail_sink, Clock(LATER))
    runner.run_once()
    runner.close()
    (row,) = event_rows(engine)
    assert row.status == DeliveryStatus.failed and f"HTTP {status}" in row.last_error
    assert len(receiver.posts) == 1  # the redirect was not followed


def test_a_hanging_endpoint_never_holds_up_an_email(database_url, engine, mail_sink, receiver):
    add_hook(engine, receiver.url, "subscriber.created")
    seed(engine, [f"reader{i}@example.org" for i in range(5)])
    receiver.hold.set()
    runner = runner_for(database_url, engine, mail_sink, Clock(LATER))
    worker = event_sender.EventWorker(event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=3),
                                                               timeout=30, private_networks=LOOPBACK)).start()
    try:
        assert receiver.held.wait(10), "the event worker never reached the endpoint"
        runner.plan()
        outcomes = runner.drain()  # while the endpoint holds the event worker's request
        assert receiver.held.is_set() and not receiver.release.is_set()
        assert sorted(o.status for o in outcomes) == ["sent"] * 5
        assert len(mail_sink.handler.received) == 5
    finally:
        receiver.release.set()
        worker.stop()
        runner.close()


def test_status_changes_emit_their_events(engine, receiver):
    add_hook(engine, receiver.url, "subscriber.unsubscribed", "subscriber.bounced", "sitrep.withdrawn",
             "sitrep.corrected")
    sitrep_id = seed(engine, ["ana@example.org", "ben@example.org"])
    from dispatch import sitreps

    with db.session_scope(engine) as session:
        ana, ben = (subscribers.get(session, a) for a in ("ana@example.org", "ben@example.org"))
        ana.status = SubscriberStatus.unsubscribed
        for _ in range(3):
            subscribers.record_hard_bounce(session, ben.id, reason="550 no such user", limit=3)
        sitreps.withdraw_sitrep(session, sitrep_id, by="chief")
        emit.emit(session, "sitrep.corrected", {"sitrep_id": sitrep_id, "revision": 2})  # the corrections code
    with db.session_scope(engine) as session:
        events = {e.type: e.payload for e in session.exec(select(Event)).all()}
    assert set(events) == {"subscriber.unsubscribed", "subscriber.bounced", "sitrep.withdrawn", "sitrep.corrected"}
    assert events["subscriber.unsubscribed"]["data"]["address"] == "ana@example.org"
    assert events["sitrep.withdrawn"]["data"]["sitrep_id"] == sitrep_id
    assert len(event_rows(engine)) == 4


def test_nothing_is_written_for_an_event_nobody_asked_for(engine):
    seed(engine, ["ana@example.org"])
    with db.session_scope(engine) as session:
        assert emit.emit(session, "delivery.failed", {}) is None
        assert session.exec(select(Event)).all() == []


def test_the_cli_adds_lists_and_removes(run, sqlite_url, monkeypatch):
    monkeypatch.setenv("DISPATCH_DATABASE_URL", sqlite_url)
    added = run("webhook", "add", "https://hooks.example.org/in", "--event", "sitrep.approved,delivery.failed",
                "--json")
    assert added.exit_code == 0, added.output
    data = json.loads(added.output)
    assert data["events"] == ["sitrep.approved", "delivery.failed"] and data["secret"].startswith("whsec_")
    listed = run("webhook", "list")
    assert "hooks.example.org" in listed.output and data["secret"] not in listed.output
    refused = run("webhook", "add", "http://hooks.example.org/in", "--event", "sitrep.approved")
    assert refused.exit_code == 2 and "url:" in refused.output and "https" in refused.output
    refused = run("webhook", "add", "https://hooks.example.org/in", "--event", "sitrep.deleted")
    assert refused.exit_code == 2 and "event:" in refused.output
    assert run("webhook", "remove", str(data["id"])).exit_code == 0
    assert "no event webhooks" in run("webhook", "list").output
    assert run("webhook", "remove", str(data["id"])).exit_code == 1


def test_the_api_adds_lists_and_removes(database_url, engine, mail_sink):
    client = TestClient(create_app(settings_for(database_url, mail_sink), engine))
    with db.session_scope(engine) as session:
        _, token = admins.create_token(session, "ops")
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/webhooks").status_code == 401
    made = client.post("/api/webhooks", json={"url": "https://hooks.example.org/x", "events": ["delivery.failed"]},
                       headers=auth)
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    listed = client.get("/api/webhooks", headers=auth).json()
    assert [h["url"] for h in listed] == ["https://hooks.example.org/x"]
    assert made.json()["secret"] not in json.dumps(listed)
    bad = client.post("/api/webhooks", json={"url": "https://hooks.example.org/x", "events": ["nope"]}, headers=auth)
    assert bad.status_code == 400 and "event" in bad.json()["detail"]
    assert client.delete(f"/api/webhooks/{made.json()['id']}", headers=auth).status_code == 204
    assert client.get("/api/webhooks", headers=auth).json() == []


def test_the_admin_page_adds_shows_the_secret_once_and_removes(web):
    web.sign_in()
    assert web.client.get("/admin/webhooks").status_code == 200
    added = web.form("/admin/webhooks", {"url": "https://hooks.example.org/in",
                                         "events": ["sitrep.approved", "subscriber.bounced"]}, page="/admin/webhooks")
    assert added.status_code == 200, added.text
    secret = added.text.split("<code>", 1)[1].split("</code>", 1)[0]
    assert secret.startswith("whsec_")
    listing = web.client.get("/admin/webhooks").text
    assert "hooks.example.org" in listing and secret not in listing and "sitrep.approved, subscriber.bounced" in listing
    refused = web.form("/admin/webhooks", {"url": "http://hooks.example.org/in", "events": ["sitrep.approved"]},
                       page="/admin/webhooks")
    assert refused.status_code == 400 and "url:" in refused.text
    with db.session_scope(web.engine) as session:
        (hook,) = endpoints.all_webhooks(session)
    gone = web.form(f"/admin/webhooks/{hook.id}/remove", page="/admin/webhooks", follow_redirects=False)
    assert gone.status_code == 303
    assert "No event webhooks yet" in web.client.get("/admin/webhooks").text
