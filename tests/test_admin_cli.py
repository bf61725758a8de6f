"""`dispatch admin`: admins with hashed passwords, API tokens shown once."""

from __future__ import annotations

import json

from sqlmodel import select

from dispatch import admins, db
from dispatch.models import AdminUser, ApiToken

from .test_cli import ok


def engine_of(tmp_path):
    return db.create_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")


def test_create_an_admin_with_a_prompted_password(run, tmp_path):
    result = ok(run("admin", "create", "editor", input="correct horse battery\ncorrect horse battery\n"))
    assert "admin editor (admin) created" in result.output
    with db.session_scope(engine_of(tmp_path)) as session:
        stored = session.exec(select(AdminUser)).one()
        assert stored.password_hash.startswith("$argon2id$") and "correct horse" not in stored.password_hash
        assert admins.authenticate(session, "editor", "correct horse battery") is not None
        assert admins.authenticate(session, "editor", "wrong password!") is None


def test_short_passwords_bad_names_and_duplicates_are_refused(run):
    short = run("admin", "create", "editor", "--password-stdin", input="short\n")
    assert short.exit_code == 2 and "at least 10 characters" in short.output
    assert run("admin", "create", "bad name!", "--password-stdin", input="long enough password\n").exit_code == 2
    ok(run("admin", "create", "editor", "--password-stdin", input="long enough password\n"))
    again = run("admin", "create", "editor", "--password-stdin", input="long enough password\n")
    assert again.exit_code == 1 and "exists already" in again.output


def test_reset_password_list_and_remove(run, tmp_path):
    ok(run("admin", "create", "editor", "--password-stdin", input="first password ok\n"))
    ok(run("admin", "create", "editor", "--reset-password", "--password-stdin", input="second password ok\n"))
    with db.session_scope(engine_of(tmp_path)) as session:
        assert admins.authenticate(session, "editor", "second password ok") is not None
        assert admins.authenticate(session, "editor", "first password ok") is None
    assert [a["username"] for a in json.loads(ok(run("admin", "list", "--json")).output)] == ["editor"]
    ok(run("admin", "remove", "editor"))
    assert json.loads(ok(run("admin", "list", "--json")).output) == []


def test_tokens_are_printed_once_and_kept_only_as_a_hash(run, tmp_path):
    result = ok(run("admin", "token", "cms"))
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("dsp_") and len(token) > 40
    with db.session_scope(engine_of(tmp_path)) as session:
        row = session.exec(select(ApiToken)).one()
        assert token not in row.token_hash and admins.find_token(session, token).name == "cms"
    assert json.loads(ok(run("admin", "tokens", "--json")).output)[0]["name"] == "cms"
    assert run("admin", "token", "cms").exit_code == 1  # names are unique
    ok(run("admin", "token", "cms", "--revoke"))
    with db.session_scope(engine_of(tmp_path)) as session:
        assert admins.find_token(session, token) is None
