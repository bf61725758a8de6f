"""Helpers for the web tests: an app on a test database, a signed-in
client, CSRF tokens read from pages, and confirmation emails read from a
real SMTP sink."""

from __future__ import annotations

import email
import re
import time
from dataclasses import dataclass
from email import policy
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import col

from dispatch import admins, db, ledger
from dispatch.config import Settings
from dispatch.models import Delivery, DeliveryStatus, utcnow
from dispatch.sink import SmtpSink
from dispatch.web import create_app

ADMIN = ("editor", "correct horse battery")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def settings_for(database_url: str, sink: SmtpSink, public_url: str = "http://testserver/", *,
                 two_person_rule: bool = False) -> Settings:
    return Settings(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port, two_person_rule=two_person_rule,
                    public_url=public_url, secret_key="web-test-secret", mail_from="Briefings <news@example.org>")


@dataclass
class Web:
    client: TestClient
    engine: object
    sink_folder: Path

    def form(self, path: str, data: dict | None = None, *, page: str | None = None, **kwargs):
        """POST a form the way a browser does: with the CSRF token of the page it is on."""
        html = self.client.get(page or path).text
        return self.client.post(path, data={**(data or {}), "csrf_token": csrf_from(html)}, **kwargs)

    def sign_in(self, username: str = ADMIN[0], password: str = ADMIN[1]):
        with db.session_scope(self.engine) as session:
            if admins.find_admin(session, username) is None:
                admins.create_admin(session, username, password)
        response = self.form("/admin/login", {"username": username, "password": password}, follow_redirects=False)
        assert response.status_code == 303, response.text
        return response

    def notices_due(self) -> int:
        """Notices planned and due but not yet sent (or given up on)."""
        with db.session_scope(self.engine) as session:
            return session.execute(sa.select(sa.func.count()).select_from(Delivery).where(
                col(Delivery.window_key).startswith(ledger.NOTICE_PREFIX),
                col(Delivery.status).in_([DeliveryStatus.pending, DeliveryStatus.sending]),
                col(Delivery.next_attempt_at) <= utcnow())).scalar_one()

    def mails(self, *, timeout: float = 10.0) -> list[email.message.EmailMessage]:
        """The emails that reached the sink, once the app's notice sender has
        worked off every notice that is due (it sends them in the background)."""
        deadline = time.monotonic() + timeout
        while self.notices_due() and time.monotonic() < deadline:
            time.sleep(0.02)
        files = sorted(self.sink_folder.glob("*.eml"))  # numbered in arrival order
        return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


def make_web(database_url: str, engine, sink: SmtpSink, folder: Path, *, two_person_rule: bool = False,
             **kwargs) -> Web:
    app = create_app(settings_for(database_url, sink, two_person_rule=two_person_rule), engine, **kwargs)
    return Web(client=TestClient(app, base_url="http://testserver"), engine=engine, sink_folder=folder)
