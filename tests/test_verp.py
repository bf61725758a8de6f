"""VERP return paths: each email's envelope sender names its delivery with a
signed token (issue 16, point 1)."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st
from pydantic import SecretStr, ValidationError

from dispatch import config, db, links, sitreps, subscribers
from dispatch.config import Settings
from dispatch.models import SubscriberKind
from dispatch.scheduler import Runner
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .servers import scripted_smtp

SECRET = "a-secret-key-for-tests"
APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)


def test_a_token_names_its_delivery_and_fits_a_local_part():
    for delivery_id in (1, 42, 10**18, 2**63 - 1):
        path = links.return_path("b" * config.MAX_BOUNCE_LOCAL + "@example.org", SECRET, delivery_id=delivery_id)
        local = path.rpartition("@")[0]
        assert len(local) <= 64
        token = links.verp_part("b" * config.MAX_BOUNCE_LOCAL + "@example.org", path)
        assert links.read_verp_token(SECRET, token) == delivery_id
        assert links.read_verp_token(SECRET, token.upper()) == delivery_id  # an MTA folded its case
    assert links.MAX_BOUNCE_LOCAL == config.MAX_BOUNCE_LOCAL


def test_a_forged_or_foreign_token_is_refused():
    token = links.verp_token(SECRET, 7)
    for bad in (links.verp_token("another-installation", 7), token.replace("d7-", "d8-"), "d7-", "x", "",
                token + "a", "d" + "9" * 40 + "-" + "a" * 13):
        with pytest.raises(links.TokenError):
            links.read_verp_token(SECRET, bad)


@given(st.text(max_size=300))
def test_any_token_is_read_or_refused_with_a_clear_reason(text):
    try:
        delivery_id = links.read_verp_token(SECRET, text)
    except links.TokenError as exc:
        assert "token" in str(exc)
    else:
        assert links.verp_token(SECRET, delivery_id) == text.lower()


def test_verp_part_knows_only_the_bounce_address():
    assert links.verp_part("bounces@example.org", "Bounces+d1-abc@EXAMPLE.org") == "d1-abc"
    assert links.verp_part("bounces@example.org", "bounces@example.org") == ""
    assert links.verp_part("bounces@example.org", "bounces+x@example.com") is None
    assert links.verp_part("bounces@example.org", "bouncesx@example.org") is None
    assert links.verp_part("bounces@example.org", "no-at-sign") is None


@pytest.mark.parametrize("value", ["b" * (config.MAX_BOUNCE_LOCAL + 1) + "@example.org", "bounces+x@example.org",
                                   "Bounces <bounces@example.org>", "bounces@example.org\r\nBcc: x@example.org"])
def test_a_bounce_address_that_cannot_carry_a_token_is_refused_at_start(value):
    with pytest.raises(ValidationError, match="bounce_address"):
        Settings(bounce_address=value)


@pytest.mark.parametrize("bounce_address", [None, "bounces@example.org"])
def test_the_envelope_sender_is_the_signed_return_path(engine, tmp_path, bounce_address):
    sink, handler = scripted_smtp(tmp_path / "mail")
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)),
                        smtp_host=sink.host, smtp_port=sink.port,
                        mail_from="Briefings <news@example.org>", secret_key=SecretStr(SECRET),
                        public_url="https://news.example.org/", bounce_address=bounce_address)
    with db.session_scope(engine) as session:
        result = sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
        for address in ("one@example.org", "two@example.org"):
            s = subscribers.add_subscriber(session, address, kind=SubscriberKind.email,
                                           prefs=Preferences(cadence="immediate"))
            s.created_at = APPROVED - timedelta(days=3)
        sitreps.approve_sitrep(session, result.sitrep.id, by="chief", at=APPROVED)
    runner = Runner(settings, engine, clock=lambda: APPROVED + timedelta(hours=1))
    try:
        summary = runner.run_once()
    finally:
        runner.close()
        sink.stop()
    assert summary.by_status["sent"] == 2
    assert len(handler.envelopes) == 2
    from sqlmodel import select

    from dispatch.models import Delivery, Subscriber

    with db.session_scope(engine) as session:
        by_address = {s.address: d.id for d, s in session.exec(
            select(Delivery, Subscriber).join(Subscriber, Subscriber.id == Delivery.subscriber_id)).all()}
    for mail_from, rcpt, _ in handler.envelopes:
        if bounce_address is None:
            assert mail_from == "news@example.org"
        else:
            assert mail_from == links.return_path(bounce_address, SECRET, delivery_id=by_address[rcpt])
            assert links.read_verp_token(SECRET, links.verp_part(bounce_address, mail_from)) == by_address[rcpt]
