"""The public surface as an attacker meets it: sessions that end, throttles
that key on what reaches a mailbox, forwarded headers believed only from
trusted proxies, security headers, strong passwords, a private signing key."""

from __future__ import annotations

import html
import os
import re
import stat

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from dispatch import admins, bootstrap, db, notices
from dispatch.config import Settings
from dispatch.errors import FieldError
from dispatch.models import AdminUser, StoredSetting
from dispatch.web import create_app
from tests.webtools import ADMIN, Web, csrf_from, settings_for


def _client(web: Web, *, peer: str = "testclient") -> TestClient:
    return TestClient(web.client.app, base_url="http://testserver", client=(peer, 40000))


def _form(client: TestClient, path: str, data: dict, **kwargs):
    token = csrf_from(client.get(path if path != "/admin/logout" else "/admin").text)
    return client.post(path, data={**data, "csrf_token": token}, **kwargs)


def _signed_in(web: Web, *, peer: str = "testclient") -> TestClient:
    with db.session_scope(web.engine) as session:
        if admins.find_admin(session, ADMIN[0]) is None:
            admins.create_admin(session, *ADMIN)
    client = _client(web, peer=peer)
    assert _form(client, "/admin/login", {"username": ADMIN[0], "password": ADMIN[1]},
                 follow_redirects=False).status_code == 303
    return client


def _opens_admin(client: TestClient) -> bool:
    return client.get("/admin", follow_redirects=False).status_code == 200


# --- 6: sessions end, and stay with their account ------------------------------

def test_signing_out_ends_every_session_of_that_admin(web):
    laptop, phone = _signed_in(web), _signed_in(web)
    stolen = dict(laptop.cookies)
    assert _opens_admin(laptop) and _opens_admin(phone)
    assert _form(laptop, "/admin/logout", {}, follow_redirects=False).status_code == 303
    assert not _opens_admin(phone)
    replay = _client(web)
    replay.cookies.update(stolen)  # the cookie as it was before signing out
    assert not _opens_admin(replay)


def test_a_new_password_ends_the_old_sessions(web):
    client = _signed_in(web)
    with db.session_scope(web.engine) as session:
        admins.set_password(session, ADMIN[0], "a different passphrase entirely")
    assert not _opens_admin(client)


def test_a_removed_admins_cookie_never_opens_a_later_account(web):
    client = _signed_in(web)
    with db.session_scope(web.engine) as session:
        old_id = admins.find_admin(session, ADMIN[0]).id
        admins.remove_admin(session, ADMIN[0])
    with db.session_scope(web.engine) as session:
        newcomer = admins.create_admin(session, "second-admin", "another long passphrase here")
        reused = newcomer.id == old_id  # SQLite hands the id out again
    assert not _opens_admin(client)
    if web.engine.dialect.name == "sqlite":
        assert reused  # the case the session nonce exists for


# --- 4: nobody elsewhere can lock the admin out ---------------------------------

def test_failed_sign_ins_elsewhere_never_lock_the_rightful_admin_out(web):
    web.client.app.state.settings.trusted_proxies  # noqa: B018 (unchanged: the peers themselves differ)
    with db.session_scope(web.engine) as session:
        admins.create_admin(session, *ADMIN)
    for n in range(12):  # an attacker on other addresses, more than any limit
        attacker = _client(web, peer=f"127.0.0.{10 + n % 4}")
        answer = _form(attacker, "/admin/login", {"username": ADMIN[0], "password": f"wrong guess {n}"})
        assert answer.status_code in (401, 429)
    assert _form(_client(web, peer="127.0.0.99"), "/admin/login", {"username": ADMIN[0], "password": "nope"}
                 ).status_code == 401  # one more wrong try of the admin's own is a 401, not a lock-out
    rightful = _client(web, peer="127.0.0.99")
    assert _form(rightful, "/admin/login", {"username": ADMIN[0], "password": ADMIN[1]},
                 follow_redirects=False).status_code == 303


def test_guessing_is_slowed_per_client_and_username_and_per_client(web):
    with db.session_scope(web.engine) as session:
        admins.create_admin(session, *ADMIN)
    guesser = _client(web, peer="127.0.0.7")
    codes = [_form(guesser, "/admin/login", {"username": ADMIN[0], "password": f"guess {n}"}).status_code
             for n in range(6)]
    assert codes == [401] * 5 + [429]
    # Other usernames from the same client are counted per client as well.
    codes = [_form(guesser, "/admin/login", {"username": f"user{n}", "password": "guess"}).status_code
             for n in range(20)]
    assert codes[-1] == 429 and 429 in codes[:16]


# --- 3: no flooding an inbox ------------------------------------------------------

def _trusting(web: Web, proxy: str) -> TestClient:
    """A second app on the same database that believes X-Forwarded-For from ``proxy``."""
    settings = web.client.app.state.settings.model_copy(update={"trusted_proxies": proxy})
    app = create_app(settings, web.engine, mailer=web.client.app.state.mailer)
    return TestClient(app, base_url="http://testserver", client=(proxy, 40000))


def test_spellings_of_one_mailbox_share_one_daily_cap_whatever_the_client(web):
    spellings = ["victim@example.org", "victim@ｅxample.org", "victim@example。org", "victim@EXAMPLE.org",
                 "VICTIM@example.org", "Victim@Example.ORG", "victim@example.org.", " victim@example.org "]
    with _trusting(web, "127.0.0.1") as proxy_app:
        answers = []
        for n, address in enumerate(spellings * 2):
            token = csrf_from(proxy_app.get("/subscribe").text)
            response = proxy_app.post("/subscribe", data={"email": address, "csrf_token": token},
                                      headers={"X-Forwarded-For": f"203.0.113.{n}"})
            # The page repeats what was typed (never the stored spelling); otherwise it reads the same.
            text = re.sub(r'value="[^"]+"', "", response.text).replace(html.escape(address.strip()), "ADDRESS")
            answers.append((response.status_code, text))
        web_ = Web(client=proxy_app, engine=web.engine, sink_folder=web.sink_folder)
        mails = web_.mails()
    to = {m["To"] for m in mails}
    assert len(mails) == notices.NOTICES_PER_ADDRESS_PER_DAY and to == {"victim@example.org"}
    valid = [a for a in answers if a[0] == 200]
    assert len({text for _, text in valid}) == 1  # every accepted request reads the same


def test_forwarded_headers_are_ignored_unless_the_peer_is_a_trusted_proxy(web):
    throttle = web.client.app.state.signup_throttle
    for n in range(throttle.limit):
        assert web.form("/subscribe", {"email": f"r{n}@example.org"},
                        headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code == 200
    refused = web.form("/subscribe", {"email": "another@example.org"}, headers={"X-Forwarded-For": "198.51.100.1"})
    assert refused.status_code == 429  # a claimed new address changes nothing


def test_trusted_proxies_must_be_addresses():
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(trusted_proxies="proxy.example.org")
    assert Settings(trusted_proxies="127.0.0.1, 10.0.0.0/8").trusted_proxies == "127.0.0.1, 10.0.0.0/8"


# --- 8: no trivial passwords ----------------------------------------------------------

@pytest.mark.parametrize("password", [" " * 10, "1234567890", "password123", "aaaaaaaaaaaa", "qwertyuiop",
                                      "editoreditor", "abcdefghijk"])
def test_trivial_passwords_are_refused_with_a_reason(password):
    with pytest.raises(FieldError, match="password: too weak: ") as refused:
        admins.check_password(password, username="editor")
    assert len(str(refused.value)) > len("password: too weak: ") + 10


def test_the_cli_refuses_a_weak_password_in_one_line(run):
    result = run("admin", "create", "editor", "--password-stdin", input="1234567890\n")
    assert result.exit_code == 2 and "too weak" in result.output and "Traceback" not in result.output


# --- 9: security headers ----------------------------------------------------------------

def test_every_page_sends_the_security_headers(web):
    client = _signed_in(web)
    for path in ("/subscribe", "/admin/login", "/admin", "/admin/subscribers", "/confirm/not-a-token",
                 "/no-such-page", "/api/subscribers"):
        headers = client.get(path).headers
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src" not in policy, path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["cache-control"] == "no-store", path
        assert headers["x-content-type-options"] == "nosniff", path


def test_the_api_docs_can_be_turned_off(database_url, engine, mail_sink):
    on = TestClient(create_app(settings_for(database_url, mail_sink), engine))
    assert on.get("/api/docs").status_code == 200 and on.get("/api/openapi.json").status_code == 200
    settings = settings_for(database_url, mail_sink).model_copy(update={"api_docs": False})
    off = TestClient(create_app(settings, engine))
    assert off.get("/api/docs").status_code == 404 and off.get("/api/openapi.json").status_code == 404


# --- 7: the signing key is private -----------------------------------------------------------

def test_a_generated_key_lives_in_an_owner_only_file_beside_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    settings = Settings(database_url=url)
    engine = bootstrap.open_engine(settings)
    key = bootstrap.secret_key(engine, settings)
    key_file = tmp_path / "subscribers.db.key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "subscribers.db").st_mode) == 0o600
    with db.session_scope(engine) as session:
        assert session.exec(select(StoredSetting)).all() == []  # nothing to read in the database
    assert bootstrap.secret_key(engine, settings) == key  # the same after a restart
    assert "subscribers.db.key" in bootstrap.key_source(engine, settings).describe()


def test_a_key_kept_in_the_database_moves_to_the_file_and_links_keep_working(tmp_path):
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    engine = bootstrap.open_engine(Settings(database_url=url))
    with db.session_scope(engine) as session:
        session.add(StoredSetting(key=bootstrap.SECRET_KEY_SETTING, value="an-older-installation-key"))
    assert bootstrap.secret_key(engine, Settings(database_url=url)) == "an-older-installation-key"
    assert (tmp_path / "subscribers.db.key").read_text().strip() == "an-older-installation-key"
    with db.session_scope(engine) as session:
        assert session.get(StoredSetting, bootstrap.SECRET_KEY_SETTING) is None


def test_dispatch_config_says_where_the_key_comes_from(run, tmp_path):
    result = run("config")
    assert result.exit_code == 0 and "subscribers.db.key" in result.output.replace("\n", "")
    assert "owner-only" in result.output


def test_admins_of_an_older_schema_get_a_nonce_each_at_the_upgrade(database_url):
    engine = db.create_engine(database_url)
    db.upgrade(engine, "0007")
    with engine.begin() as connection:
        for name in ("one", "two"):
            connection.exec_driver_sql(
                "INSERT INTO admin_user (username, password_hash, created_at) VALUES (%s, 'x', CURRENT_TIMESTAMP)"
                % f"'{name}'")
    db.upgrade(engine)
    with db.session_scope(engine) as session:
        nonces = [a.session_nonce for a in session.exec(select(AdminUser)).all()]
    assert len(set(nonces)) == 2 and all(len(n) >= 32 for n in nonces)
    engine.dispose()


# --- 2: the upload allowances are for admins only ---------------------------------------

def test_only_a_signed_in_admin_or_a_valid_token_gets_the_upload_allowance(web):
    from dispatch.web.app import DEFAULT_BODY_BYTES

    body = b"email\n" + b"reader@example.org\n" * (2 * DEFAULT_BODY_BYTES // 19)
    files = {"file": ("readers.csv", body, "text/csv")}
    anonymous = _client(web)
    assert anonymous.post("/admin/subscribers/import", files=files).status_code == 413
    forged = _client(web)
    forged.cookies.set("dispatch_session", "eyJhZG1pbl9pZCI6IDF9.forged.signature")
    assert forged.post("/admin/subscribers/import", files=files).status_code == 413
    visitor = _client(web)
    visitor.get("/subscribe")  # a real session cookie, but nobody signed in
    assert visitor.post("/admin/subscribers/import", files=files).status_code == 413
    admin = _signed_in(web)
    token = csrf_from(admin.get("/admin/subscribers/import").text)
    answer = admin.post("/admin/subscribers/import", files=files, data={"csrf_token": token})
    assert answer.status_code == 200, answer.text[:300]

    sitrep = {"text": "x" * (2 * DEFAULT_BODY_BYTES)}
    assert anonymous.post("/api/sitreps", json=sitrep).status_code == 413
    assert anonymous.post("/api/sitreps", json=sitrep, headers={"Authorization": "Bearer dsp_guess"}).status_code == 413
    with db.session_scope(web.engine) as session:
        _, api_token = admins.create_token(session, "cms")
    allowed = anonymous.post("/api/sitreps", json=sitrep, headers={"Authorization": f"Bearer {api_token}"})
    assert allowed.status_code != 413  # read, then judged as a SITREP
