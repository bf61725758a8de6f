"""An address names one subscriber: exactly, an email's compared casefolded
(READER@example.org is reader@example.org), never as a LIKE pattern; a
search is a search, with % and _ as plain characters. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import select

from dispatch import db, sitrep_text, sitreps, subscribers
from dispatch.errors import DuplicateError, NotFoundError
from dispatch.models import Subscriber, SubscriberKind, SubscriberStatus
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .test_web_public import link_in, subscribe


def addresses(session) -> list[str]:
    return sorted(session.exec(select(Subscriber.address)).all())


def test_an_address_with_like_wildcards_names_no_one_else(session):
    subscribers.add_subscriber(session, "jxsmith@example.org")
    for pattern in ("j_smith@example.org", "%smith%@%", "%wild-%@%", "%", "_@example.org"):
        with pytest.raises(NotFoundError):
            subscribers.get(session, pattern)
        with pytest.raises(NotFoundError):
            subscribers.remove_subscriber(session, pattern)
    assert addresses(session) == ["jxsmith@example.org"]


def test_an_email_address_is_found_whatever_its_case(session):
    reader = subscribers.add_subscriber(session, "Reader@Example.org")
    assert subscribers.get(session, "reader@example.org") is reader
    assert subscribers.get(session, " READER@EXAMPLE.ORG ") is reader
    assert subscribers.find_by_address(session, "rEaDeR@example.org", kind=SubscriberKind.email) is reader
    # A Slack channel ID or webhook URL is matched exactly.
    channel = subscribers.add_subscriber(session, "C0123ABCD", kind=SubscriberKind.slack)
    assert subscribers.get(session, "C0123ABCD") is channel
    with pytest.raises(NotFoundError):
        subscribers.get(session, "c0123abcd")


def test_an_address_in_another_case_is_the_same_subscription(session):
    subscribers.add_subscriber(session, "reader@example.org")
    with pytest.raises(DuplicateError, match="already subscribed"):
        subscribers.add_subscriber(session, "READER@example.org")
    with pytest.raises(DuplicateError):
        subscribers.add_subscriber(session, "Reader@EXAMPLE.ORG", status=SubscriberStatus.pending)
    assert addresses(session) == ["reader@example.org"]


def test_the_database_itself_refuses_a_second_row_for_one_address(engine):
    """Whatever the code path: the unique key is on the casefolded address."""
    with db.session_scope(engine) as session:
        subscribers.add_subscriber(session, "reader@example.org")
    with pytest.raises(sa.exc.IntegrityError):
        with db.session_scope(engine) as session:
            session.add(Subscriber(address="READER@example.org"))
    with db.session_scope(engine) as session:
        row = subscribers.get(session, "reader@example.org")
        row.address = "Reader@example.org"  # a change of spelling keeps its key in step
    with db.session_scope(engine) as session:
        assert session.exec(select(Subscriber.address_key)).all() == ["reader@example.org"]
    # A Core INSERT that gives no key (bench/, scripts) gets one too.
    row = {"kind": "email", "cadence": "daily", "format": "html", "status": "active",
           "created_at": datetime.now(timezone.utc)}
    with pytest.raises(sa.exc.IntegrityError, match="address_key"):
        with engine.begin() as connection:
            connection.execute(sa.insert(Subscriber.__table__), [{**row, "address": "READER@EXAMPLE.org"}])
    with engine.begin() as connection:
        connection.execute(sa.insert(Subscriber.__table__), [{**row, "address": "Other@Example.org"}])
        assert connection.execute(sa.select(Subscriber.address_key).where(
            Subscriber.address == "Other@Example.org")).scalar() == "other@example.org"


def test_editing_by_address_changes_only_that_subscriber(session):
    subscribers.add_subscriber(session, "jxsmith@example.org", prefs=Preferences(name="JX"))
    subscribers.add_subscriber(session, "j_smith@example.org", prefs=Preferences(name="J underscore"))
    subscribers.edit_subscriber(session, "J_SMITH@example.org", Preferences(name="Changed"))
    names = {s.address: s.name for s in session.exec(select(Subscriber)).all()}
    assert names == {"jxsmith@example.org": "JX", "j_smith@example.org": "Changed"}


def test_a_search_treats_percent_and_underscore_as_text(session):
    subscribers.add_subscriber(session, "jxsmith@example.org", prefs=Preferences(name="Plain"))
    subscribers.add_subscriber(session, "j_smith@example.org", prefs=Preferences(name="100% sure"))
    subscribers.add_subscriber(session, "slash@example.org", prefs=Preferences(name="back\\slash"))

    def found(search):
        return [s.address for s in subscribers.list_subscribers(session, search=search)]
    # A prefix of the address (an index range since issue 14), in any case.
    assert found("j") == ["jxsmith@example.org", "j_smith@example.org"]
    assert found("JXS") == ["jxsmith@example.org"]
    assert found("j_") == ["j_smith@example.org"]
    assert found("j%") == []
    assert found("%") == []
    assert found("sla") == ["slash@example.org"]
    assert found("smith") == []  # not the middle of one


def test_a_sitrep_search_treats_wildcards_as_text(session):
    text = (FIXTURES / "standard.txt").read_text("utf-8")
    sitreps.import_parsed(session, sitrep_text.parse(text), actor="ed")
    assert [s.title for s in sitreps.list_sitreps(session, search="grain")] != []
    assert sitreps.list_sitreps(session, search="%") == []
    assert sitreps.list_sitreps(session, search="_") == []


def test_the_cli_removes_only_the_address_given(run, tmp_path):
    assert run("subscriber", "add", "jxsmith@example.org").exit_code == 0
    result = run("subscriber", "remove", "j_smith@example.org", "--yes")
    assert result.exit_code == 1 and "no subscriber 'j_smith@example.org'" in result.stderr
    assert "jxsmith@example.org" in run("subscriber", "show", "jxsmith@example.org").stdout


def test_the_api_patches_only_the_address_given(web):
    from dispatch import admins
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
        subscribers.add_subscriber(session, "someone-wild-else@example.org", prefs=Preferences(name="Them"))
    headers = {"Authorization": f"Bearer {token}"}
    response = web.client.patch("/api/subscribers/%25wild-%25@%25", json={"name": "Changed"}, headers=headers)
    assert response.status_code == 404
    assert web.client.get("/api/subscribers/SOMEONE-WILD-ELSE@example.org", headers=headers).json()["name"] == "Them"


def test_signing_up_again_in_another_case_reminds_instead_of_subscribing_twice(web):
    subscribe(web, email="reader@example.org")
    web.form(link_in(web.mails()[-1], "confirm"))
    response = subscribe(web, email="READER@example.org")
    assert response.status_code == 200
    with db.session_scope(web.engine) as session:
        (only,) = session.exec(select(Subscriber)).all()
        assert (only.address, only.status) == ("reader@example.org", SubscriberStatus.active)
    reminder = web.mails()[-1]
    assert reminder["To"] == "reader@example.org" and "already subscribed" in reminder.get_content()


# --- migration 0009: duplicates made before the key existed ---------------------

def _at_0008_with_duplicates(database_url):
    """A database at 0008 holding what the old code let in: one mailbox
    subscribed three times in different cases, with deliveries."""
    engine = db.create_engine(database_url)
    db.upgrade(engine, "0008")
    rows = [(1, "reader@example.org", "active", None), (2, "READER@example.org", "unsubscribed",
                                                           "unsubscribed by the subscriber (one-click)"),
            (3, "Reader@Example.org", "pending", None), (4, "other@example.org", "active", None),
            (5, "C0123ABCD", "active", None)]
    with engine.begin() as connection:
        for id_, address, status, reason in rows:
            connection.execute(sa.text(
                "INSERT INTO subscriber (id, kind, address, name, timezone, send_at, cadence, weekday, format, "
                "status, status_reason, bounce_count, created_at) VALUES (:id, :kind, :address, '', 'UTC', "
                "'07:00', 'daily', 0, 'html', :status, :reason, :bounces, '2026-01-01 00:00:00')"),
                {"id": id_, "kind": "slack" if id_ == 5 else "email", "address": address, "status": status,
                 "reason": reason, "bounces": 1 if id_ == 2 else 0})
        for id_, subscriber_id, window in [(1, 1, "daily:a"), (2, 2, "daily:a"), (3, 2, "daily:b"), (4, 4, "daily:a")]:
            connection.execute(sa.text(
                "INSERT INTO delivery (id, subscriber_id, window_key, sitrep_ids, status, attempts, created_at) "
                "VALUES (:id, :s, :w, '[]', 'sent', 1, '2026-01-01 00:00:00')"), {"id": id_, "s": subscriber_id,
                                                                                  "w": window})
            connection.execute(sa.text(
                "INSERT INTO delivery_attempt (delivery_id, at, outcome, detail) "
                "VALUES (:d, '2026-01-01 00:00:00', 'sent', '')"), {"d": id_})
    return engine


def test_the_upgrade_merges_duplicate_addresses_keeping_the_oldest_and_the_opt_out(database_url, caplog):
    engine = _at_0008_with_duplicates(database_url)
    with caplog.at_level(logging.WARNING, logger="dispatch.migrations"):
        db.upgrade(engine)
    with db.session_scope(engine) as session:
        kept = {s.id: s for s in session.exec(select(Subscriber)).all()}
        assert sorted(kept) == [1, 4, 5]
        assert kept[1].address == "reader@example.org" and kept[1].address_key == "reader@example.org"
        # The opt-out made on a duplicate holds for the mailbox.
        assert kept[1].status == SubscriberStatus.unsubscribed and "merged" in kept[1].status_reason
        assert kept[1].bounce_count == 1
        assert (kept[4].status, kept[5].address_key) == (SubscriberStatus.active, "C0123ABCD")
    with engine.connect() as connection:
        deliveries = connection.execute(sa.text(
            "SELECT id, subscriber_id, window_key FROM delivery ORDER BY id")).all()
        attempts = connection.execute(sa.text("SELECT delivery_id FROM delivery_attempt ORDER BY 1")).scalars()
        # The duplicate copy of window a is gone; the duplicate's other delivery moved over.
        assert [tuple(d) for d in deliveries] == [(1, 1, "daily:a"), (3, 1, "daily:b"), (4, 4, "daily:a")]
        assert list(attempts) == [1, 3, 4]
    assert "#2, #3" in caplog.text and "merged into #1" in caplog.text and "@" not in caplog.text
    with pytest.raises(DuplicateError):
        with db.session_scope(engine) as session:
            subscribers.add_subscriber(session, "READER@EXAMPLE.ORG")
    db.downgrade(engine, "0008")
    db.upgrade(engine)
    engine.dispose()
