"""A record that cannot be written after a send is bounded, retried and, at
the last, held — never turned into a resend. Real faults in real
databases: a receipt longer than its column, and triggers that refuse to
record a delivery as sent."""

import json
from datetime import timedelta

import psycopg
import pytest
from pydantic import SecretStr
from sqlmodel import select

from dispatch import bootstrap, db, ledger, planner, subscribers
from dispatch.config import Settings
from dispatch.models import DeliveryAttempt, DeliveryStatus, SubscriberKind, SubscriberStatus
from dispatch.scheduler import Runner
from dispatch.sink import SlackSink

from .conftest import _libpq_dsn
from .deliverytools import LATER, LOCAL_WEBHOOK_HOSTS, LOOPBACK_NETWORKS, Clock, outcomes, received, rows, seed
from .servers import scripted_smtp

TOKEN = "xoxb-test"


@pytest.fixture
def servers(tmp_path):
    sink, handler = scripted_smtp(tmp_path / "mail")
    slack = SlackSink(tmp_path / "slack", token=TOKEN).start()
    yield sink, handler, slack
    sink.stop()
    slack.stop()


def runner_for(database_url, engine, servers, clock, **overrides):
    sink, _, slack = servers
    settings = Settings(database_url=database_url, smtp_host=sink.host, smtp_port=sink.port,
                        mail_from="news@example.org", secret_key=SecretStr("k"), slack_base_url=slack.base_url,
                        slack_webhook_hosts=LOCAL_WEBHOOK_HOSTS, outbound_private_networks=LOOPBACK_NETWORKS,
                        slack_bot_token=SecretStr(TOKEN), slack_min_interval=0, sender_threads=1, **overrides)
    return Runner(settings, engine, clock=clock)


def run_twice(runner, clock):
    """A run, then another after every lease has run out (the planner reclaims first)."""
    first = runner.run_once()
    clock.now += timedelta(minutes=30)
    second = runner.run_once()
    return first, second


def test_a_long_webhook_url_is_stored_and_its_digest_sent_once(engine, database_url, servers):
    """The long URL once made a receipt too long for its column (a crash after
    each post on PostgreSQL); receipts now leave the URL out, and any text
    too long is cut (next test)."""
    _, handler, slack = servers
    # A long webhook URL (Slack's own are /services/T…/B…/secret).
    hook = slack.webhook_url("/".join(["T0" + "a" * 140, "B0" + "b" * 140, "c" * 170]))
    assert 480 < len(hook) <= 500
    seed(engine, [(SubscriberKind.slack, hook), "reader@example.org"])
    clock = Clock(LATER)
    runner = runner_for(database_url, engine, servers, clock)
    try:
        first, second = run_twice(runner, clock)
    finally:
        runner.close()
    assert first.by_status == {"sent": 2} and second.by_status == {}
    assert len(slack.posts) == 1 and list(received(handler).values()) == [1]  # each sent once
    by_address = {d.subscriber_id: d for d in rows(engine)}
    with db.session_scope(engine) as session:
        webhook_row = by_address[subscribers.get(session, hook).id]
    assert webhook_row.status == DeliveryStatus.sent
    assert len(webhook_row.receipt) <= ledger.MAX_RECEIPT and "c" * 170 not in webhook_row.receipt


def test_text_is_bounded_the_same_on_every_backend(engine):
    seed(engine, ["reader@example.org"])
    planner.plan_due(engine, now=LATER)
    with db.session_scope(engine) as session:
        (claimed,) = ledger.claim(session, now=LATER, limit=1)
        ledger.mark_failed(session, claimed, error="550 " + "no\x00such " * 1000, now=LATER,
                           progress=json.dumps({"ts": ["1.0"] * 400}))
    (row,) = rows(engine)
    assert len(row.last_error) == ledger.MAX_TEXT and row.last_error.endswith(ledger.TRUNCATED)
    assert "\x00" not in row.last_error
    assert len(row.receipt) == ledger.MAX_RECEIPT
    with db.session_scope(engine) as session:
        detail = session.exec(select(DeliveryAttempt.detail)).one()
    assert len(detail) == ledger.MAX_TEXT


def refuse_sent(engine, database_url, *, times: int | None = None, subscriber_id: int | None = None):
    """A trigger that refuses to record a delivery as sent: the first
    ``times`` tries (a sequence counts them, outside any transaction), or
    always for one subscriber's deliveries."""
    if engine.dialect.name == "sqlite":
        assert times is None, "SQLite has nothing that outlives a rolled-back transaction"
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON delivery "
                f"WHEN NEW.status = 'sent' AND NEW.subscriber_id = {subscriber_id} "
                "BEGIN SELECT RAISE(ABORT, 'injected fault: this row cannot be recorded'); END")
        return
    condition = f"nextval('refusals') <= {times}" if times else f"NEW.subscriber_id = {subscriber_id}"
    with psycopg.connect(_libpq_dsn(database_url), autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE refusals")
        conn.execute(f"""
            CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.status = 'sent' AND OLD.status <> 'sent' AND {condition} THEN
                RAISE EXCEPTION 'injected fault: this row cannot be recorded';
              END IF;
              RETURN NEW;
            END $$""")
        conn.execute("CREATE TRIGGER refuse_sent BEFORE UPDATE ON delivery FOR EACH ROW EXECUTE FUNCTION refuse_sent()")


@pytest.fixture
def pg_engine(postgres_url):
    engine = db.create_engine(postgres_url)
    bootstrap.init_database(engine)
    yield engine
    engine.dispose()


def test_a_record_refused_a_few_times_is_retried_and_nothing_is_sent_twice(pg_engine, postgres_url, servers):
    engine = pg_engine
    _, handler, _ = servers
    seed(engine, [f"reader{n}@example.org" for n in range(3)])
    refuse_sent(engine, postgres_url, times=2)
    clock = Clock(LATER)
    runner = runner_for(postgres_url, engine, servers, clock)
    try:
        first, second = run_twice(runner, clock)
    finally:
        runner.close()
    assert first.by_status == {"sent": 3} and second.by_status == {}
    assert {d.status for d in rows(engine)} == {DeliveryStatus.sent}
    assert sorted(received(handler).values()) == [1, 1, 1]


def test_a_record_that_cannot_be_written_is_held_not_sent_again(engine, database_url, servers, run, monkeypatch):
    _, handler, _ = servers
    seed(engine, ["ok1@example.org", "stuck@example.org", "ok2@example.org"])
    with db.session_scope(engine) as session:
        stuck = subscribers.get(session, "stuck@example.org").id
    refuse_sent(engine, database_url, subscriber_id=stuck)
    clock = Clock(LATER)
    runner = runner_for(database_url, engine, servers, clock)
    try:
        first, second = run_twice(runner, clock)
    finally:
        runner.close()
    assert first.by_status == {"sent": 2, "held": 1} and first.unrecorded == 1
    assert second.by_status == {}  # the held row was not reclaimed, so not sent again
    assert sorted(received(handler).values()) == [1, 1, 1]
    held = next(d for d in rows(engine) if d.subscriber_id == stuck)
    assert held.status == DeliveryStatus.sending and held.lease_until == ledger.HELD_UNTIL
    assert "held" in outcomes(engine)
    with db.session_scope(engine) as session:  # the reader is left alone
        assert subscribers.get(session, stuck).status == SubscriberStatus.active

    monkeypatch.setenv("DISPATCH_DATABASE_URL", database_url)
    shown = run("status", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["held"] == {"count": 1, "ids": [held.id]}
    assert "held" in run("status").stdout
    assert run("retry", "--failed").stdout.startswith("requeued 0")  # held rows need a person's choice
    assert run("retry", str(held.id)).exit_code == 0
    assert next(d for d in rows(engine) if d.id == held.id).status == DeliveryStatus.pending
