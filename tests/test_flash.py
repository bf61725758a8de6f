"""FLASH (issue 17 point 6): an approval sent at once to every matching
active reader, whatever their cadence, through the ledger; their later
digests leave it out; marked FLASH in the subject, the body and the Slack
header. Over real SMTP (aiosmtpd) and the local Slack API, on SQLite and
PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import SecretStr
from sqlmodel import select

from dispatch import admins, db, digest, email_shape, ledger, planner, sitreps, subscribers
from dispatch.config import Settings
from dispatch.desk import audit
from dispatch.events import endpoints
from dispatch.models import AuditEntry, Delivery, Event, Subscriber, SubscriberKind, SubscriberStatus
from dispatch.render_slack import SlackRenderer
from dispatch.scheduler import Runner
from dispatch.sink import SlackSink
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES
from .servers import scripted_smtp

TOKEN = "xoxb-flash"
STANDARD = FIXTURES / "standard.txt"
APPROVED = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)  # a Thursday, after the 07:00 windows
NEXT_MORNING = datetime(2026, 11, 27, 9, tzinfo=timezone.utc)  # after Friday's 07:00 windows
FRIDAY = 4


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def other_sitrep_text() -> str:
    """A second SITREP in the same format (and region) with a title of its own."""
    return STANDARD.read_text("utf-8").replace("Port Strike Halts Grain Shipments from Odesa",
                                               "Port Talks Resume in Odesa")


# --- pure decisions ------------------------------------------------------------------

def _view(id_, *, flash=False, regions=("europe-eurasia",), approved_at=APPROVED):
    return digest.SitrepView(id=id_, title=f"SITREP {id_}", event_date=date(2026, 11, 26), approved_at=approved_at,
                             regions=regions, summary=("a bullet",), flash=flash)


def test_flash_windows_reach_every_cadence_and_only_matching_readers():
    flash, plain = _view(1, flash=True), _view(2)
    for cadence in ("immediate", "daily", "weekly"):
        reader = digest.Recipient(id=1, kind="email", address="a@example.org", cadence=cadence,
                                  created_at=APPROVED + timedelta(days=1))  # joined after: a FLASH still reaches them
        (window,) = digest.flash_windows(reader, [flash, plain])
        assert window.key == digest.flash_key(flash) and window.key.startswith("flash:1@")
        assert window.sitrep_ids == (1,)
    elsewhere = digest.Recipient(id=2, kind="email", address="b@example.org", regions=frozenset({"americas"}))
    assert digest.flash_windows(elsewhere, [flash]) == ()


def test_a_digest_window_leaves_out_what_went_out_in_a_flash():
    window = digest.Window(key="daily:2026-11-27", start=APPROVED, end=NEXT_MORNING, sitrep_ids=(1, 2))
    assert digest.without_flashed(window, []) is window
    assert digest.without_flashed(window, [1]).sitrep_ids == (2,)
    assert digest.without_flashed(window, [1, 2]) is None  # an empty digest is not sent


def test_the_flash_subject_keeps_the_subject_rules():
    assert email_shape.subject(["Port strike"], flash=True) == "FLASH: Port strike"
    long = email_shape.subject(["A very long title about a port strike that goes on and on and on"], flash=True)
    assert long.startswith("FLASH: ") and len(long) <= email_shape.SUBJECT_LIMIT and long.endswith("…")
    assert email_shape.subject(["Line\r\nbreak"], flash=True) == "FLASH: Line break"
    assert email_shape.subject([], flash=True) == ""


def test_the_slack_header_says_flash():
    reader = digest.Recipient(id=1, kind="slack", address="C0DESK01", cadence="weekly")
    built = digest.build_digest(reader, "flash:1@20261126T150000Z", [_view(1, flash=True)])
    (message,) = SlackRenderer(brand="Desk").render(built).messages
    assert message.blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "FLASH: SITREP 1",
                                                            "emoji": False}}
    assert message.blocks[1]["elements"][0]["text"] == "Desk · FLASH"
    assert message.text == "FLASH: SITREP 1"
    usual = SlackRenderer(brand="Desk").render(digest.build_digest(reader, "weekly:2026-11-27", [_view(1)]))
    assert usual.messages[0].blocks[0]["type"] == "context" and usual.messages[0].text == "SITREP: SITREP 1"


# --- end to end: the runner over real servers -----------------------------------------

@pytest.fixture
def smtp(tmp_path):
    sink, handler = scripted_smtp(tmp_path / "mail")
    yield sink, handler
    sink.stop()


@pytest.fixture
def slack(tmp_path):
    sink = SlackSink(tmp_path / "slack", token=TOKEN).start()
    yield sink
    sink.stop()


def _settings(database_url, smtp, slack, **extra) -> Settings:
    return Settings(database_url=database_url, smtp_host=smtp[0].host, smtp_port=smtp[0].port,
                    mail_from="Briefings <news@example.org>", slack_base_url=slack.base_url,
                    slack_bot_token=SecretStr(TOKEN), slack_min_interval=0, secret_key=SecretStr("k"),
                    public_url="https://news.example.org/", sender_threads=2, batch_size=3, **extra)


READERS = [
    ("daily@example.org", SubscriberKind.email, Preferences(cadence="daily", send_at="07:00")),
    ("weekly@example.org", SubscriberKind.email, Preferences(cadence="weekly", weekday=FRIDAY, send_at="07:00")),
    ("now@example.org", SubscriberKind.email, Preferences(cadence="immediate")),
    ("text@example.org", SubscriberKind.email, Preferences(cadence="daily", format="text")),
    ("C0DESK01", SubscriberKind.slack, Preferences(cadence="weekly", weekday=FRIDAY)),
    ("americas@example.org", SubscriberKind.email, Preferences(cadence="daily", regions=["americas"])),
    ("gone@example.org", SubscriberKind.email, Preferences(cadence="daily")),
]
FLASHED = ["daily@example.org", "now@example.org", "text@example.org", "weekly@example.org"]


def seed(engine, *, flash: bool = True, approved_at=APPROVED) -> int:
    with db.session_scope(engine) as session:
        sitrep = sitreps.import_parsed(session, parse(STANDARD.read_text("utf-8")), actor="ed").sitrep
        for address, kind, prefs in READERS:
            s = subscribers.add_subscriber(session, address, kind=kind, prefs=prefs)
            s.created_at = APPROVED - timedelta(days=3)
            if address == "gone@example.org":
                s.status = SubscriberStatus.unsubscribed
        sitreps.approve_sitrep(session, sitrep.id, by="chief", at=approved_at, flash=flash)
        return sitrep.id


def mails(handler) -> list:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(handler.folder.glob("*.eml"))]


def windows_by_reader(engine) -> dict[str, list[str]]:
    with db.session_scope(engine) as session:
        rows = session.exec(select(Subscriber.address, Delivery.window_key).join(
            Subscriber, Subscriber.id == Delivery.subscriber_id).order_by(Delivery.id)).all()
    found: dict[str, list[str]] = {}
    for address, key in rows:
        found.setdefault(address, []).append(key.split(":", 1)[0])
    return found


def test_a_flash_reaches_every_cadence_at_once_and_their_digests_leave_it_out(engine, database_url, smtp, slack):
    _, handler = smtp
    clock = Clock(APPROVED + timedelta(seconds=5))  # long before any reader's next window
    first = seed(engine)
    runner = Runner(_settings(database_url, smtp, slack), engine, clock=clock)
    try:
        summary = runner.run_once()
        assert summary.by_status == {"sent": 5}, summary.problems
        got = mails(handler)
        assert sorted(m["To"] for m in got) == FLASHED  # not the Americas reader, not the one who left
        for message in got:
            assert message["Subject"] == "FLASH: Port Strike Halts Grain Shipments from Odesa"
            text = message.get_body(("plain",)).get_content()
            assert "*** FLASH: sent at once, outside your usual briefings ***" in text
        html = next(m for m in got if m["To"] == "daily@example.org").get_body(("html",)).get_content()
        assert 'class="flash-label"' in html and "<strong" in html and "FLASH</strong>" in html
        (post,) = slack.posts
        assert post["channel"] == "C0DESK01" and post["text"].startswith("FLASH: ")
        assert post["blocks"][0]["type"] == "header" and post["blocks"][0]["text"]["text"].startswith("FLASH: ")

        # Again: nothing twice.
        clock.now += timedelta(minutes=5)
        again = runner.run_once()
        assert again.by_status == {} and len(mails(handler)) == 4 and len(slack.posts) == 1

        # A second SITREP, approved the usual way; the next morning's digests carry it alone.
        with db.session_scope(engine) as session:
            second = sitreps.import_parsed(session, parse(other_sitrep_text()), actor="ed").sitrep
            sitreps.approve_sitrep(session, second.id, by="chief", at=APPROVED + timedelta(hours=1))
        clock.now = NEXT_MORNING
        later = runner.run_once()
        assert later.by_status == {"sent": 5}, later.problems
        digests = [m for m in mails(handler)[4:]]
        assert sorted(m["To"] for m in digests) == FLASHED
        for message in digests:
            assert message["Subject"] == "Port Talks Resume in Odesa", message["To"]
            assert "Port Strike" not in message.get_body(("plain",)).get_content()
        weekly_post = slack.posts[1]
        assert not weekly_post["text"].startswith("FLASH") and "Port Talks" in weekly_post["text"]
        assert "Port Strike" not in json.dumps(weekly_post["blocks"])
        clock.now += timedelta(hours=1)
        assert runner.run_once().by_status == {}
    finally:
        runner.close()
    # In the ledger: one FLASH each; the immediate reader never got the first one as an immediate delivery.
    # (The Americas reader and the one who left have no row at all.)
    assert windows_by_reader(engine) == {
        "daily@example.org": ["flash", "daily"], "weekly@example.org": ["flash", "weekly"],
        "now@example.org": ["flash", "sitrep"], "text@example.org": ["flash", "daily"],
        "C0DESK01": ["flash", "weekly"]}
    with db.session_scope(engine) as session:
        flash_rows = session.exec(select(Delivery).where(Delivery.window_key.startswith("flash:"))).all()
        assert {tuple(d.sitrep_ids) for d in flash_rows} == {(first,)}
        assert all(d.status.value == "sent" for d in flash_rows)
        # delivery_sitrep links each FLASH to its SITREP: the log filtered by the SITREP finds them.
        assert len(ledger.log(session, sitrep_id=first)) == 5


def test_a_failed_flash_is_carried_by_the_next_digest(engine, database_url, smtp, slack):
    """Only a FLASH that reached (or may yet reach) the reader leaves the digest out."""
    _, handler = smtp
    clock = Clock(APPROVED + timedelta(seconds=5))
    seed(engine)
    runner = Runner(_settings(database_url, smtp, slack), engine, clock=clock)
    try:
        planner.plan_flash(engine, now=clock.now)
        with db.session_scope(engine) as session:
            daily_id = session.exec(select(Subscriber.id).where(Subscriber.address == "daily@example.org")).one()
            claimed = ledger.claim(session, now=clock.now, limit=10)
            daily = next(c for c in claimed if c.subscriber_id == daily_id)
            ledger.record(session, [ledger.failed(daily, error="550 mailbox full", now=clock.now)]
                          + [ledger.released(c, now=clock.now) for c in claimed if c is not daily])
        runner.run_once()
        clock.now = NEXT_MORNING
        runner.run_once()
    finally:
        runner.close()
    to_daily = [m["Subject"] for m in mails(handler) if m["To"] == "daily@example.org"]
    assert to_daily == ["Port Strike Halts Grain Shipments from Odesa"]  # its digest, not a FLASH
    to_text = [m["Subject"] for m in mails(handler) if m["To"] == "text@example.org"]
    assert to_text == ["FLASH: Port Strike Halts Grain Shipments from Odesa"]


def test_a_flash_approved_while_dispatch_run_runs_goes_out_before_any_planning_run(engine, database_url, smtp,
                                                                                   slack):
    """Planning runs an hour apart: only the FLASH path can send it."""
    _, handler = smtp
    with db.session_scope(engine) as session:
        sitrep = sitreps.import_parsed(session, parse(STANDARD.read_text("utf-8")), actor="ed").sitrep
        subscribers.add_subscriber(session, "weekly@example.org",
                                   prefs=Preferences(cadence="weekly", weekday=FRIDAY, send_at="07:00"))
    runner = Runner(_settings(database_url, smtp, slack, plan_interval=3600), engine)
    planning_runs = []
    real_plan = runner.plan
    runner.plan = lambda: (planning_runs.append(1), real_plan())[1]  # counted
    thread = threading.Thread(target=runner.run_forever, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        deadline = time.monotonic() + 30  # bounds on the waits, not timing claims
        while time.monotonic() < deadline and not planning_runs:
            time.sleep(0.05)
        time.sleep(0.5)  # the first planning run has come and gone
        with db.session_scope(engine) as session:  # as the web page's approval does, from another connection
            sitreps.approve_sitrep(session, sitrep.id, by="chief", flash=True)
        while time.monotonic() < deadline and not mails(handler):
            time.sleep(0.1)
    finally:
        runner.request_stop()
        thread.join(30)
    assert len(planning_runs) == 1  # the next one is an hour away
    assert [m["Subject"][:7] for m in mails(handler)] == ["FLASH: "]


# --- the faces: CLI, two people, embargo ----------------------------------------------

@pytest.fixture
def cli(run, database_url, engine, cli_sink, monkeypatch):
    monkeypatch.setenv("DISPATCH_TWO_PERSON_RULE", "true")
    monkeypatch.setenv("DISPATCH_SECRET_KEY", "flash-test-secret")
    invoke = lambda *args: run("--database-url", database_url, *args)  # noqa: E731
    for address, cadence in (("now@example.org", "immediate"), ("daily@example.org", "daily"),
                             ("weekly@example.org", "weekly")):
        extra = ("--weekday", "fri") if cadence == "weekly" else ()
        assert invoke("--as", "ed", "subscriber", "add", address, "--cadence", cadence, "--at", "07:00",
                      *extra).exit_code == 0
    assert invoke("--as", "ed", "subscriber", "add", "americas@example.org", "--region", "americas").exit_code == 0
    assert invoke("--as", "ed", "sitrep", "import", STANDARD).exit_code == 0
    return invoke


@pytest.fixture
def cli_sink(tmp_path, monkeypatch):
    from dispatch.sink import SmtpSink

    sink = SmtpSink(tmp_path / "mail").start()
    monkeypatch.setenv("DISPATCH_SMTP_HOST", sink.host)
    monkeypatch.setenv("DISPATCH_SMTP_PORT", str(sink.port))
    yield tmp_path / "mail"
    sink.stop()


def _cli_mails(folder):
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(folder.glob("*.eml"))]


def _audit(engine, target="sitrep:1"):
    with db.session_scope(engine) as session:
        return [audit.as_dict(e) for e in session.exec(select(AuditEntry).where(AuditEntry.target == target)
                                                        .order_by(AuditEntry.id)).all()]


def test_cli_flash_two_person_rule_list_and_audit(cli_sink, cli, engine):
    refused = cli("--as", "ed", "sitrep", "approve", "1", "--flash")
    assert refused.exit_code == 2 and "two-person rule" in refused.output
    assert cli("run", "--once").exit_code == 0
    assert _cli_mails(cli_sink) == []  # refused: nothing planned, nothing sent
    approved = cli("--as", "chief", "sitrep", "approve", "1", "--flash")
    assert approved.exit_code == 0 and "FLASH" in approved.output, approved.output
    assert "FLASH" in cli("sitrep", "list").output
    assert json.loads(cli("sitrep", "show", "1", "--json").stdout)["flash"] is True
    assert cli("run", "--once").exit_code == 0
    got = _cli_mails(cli_sink)
    assert sorted(m["To"] for m in got) == ["daily@example.org", "now@example.org", "weekly@example.org"]
    assert {m["Subject"][:7] for m in got} == {"FLASH: "}
    assert cli("run", "--once").exit_code == 0
    assert cli("run", "--once", "--now", (datetime.now(timezone.utc) + timedelta(days=8)).isoformat()).exit_code == 0
    assert len(_cli_mails(cli_sink)) == 3  # no repeat, and no later digest carries it
    approval = [e for e in _audit(engine) if e["action"] == "sitrep.approved"]
    assert [(e["actor_kind"], e["actor"], e["changes"]["flash"]) for e in approval] == [("cli", "chief",
                                                                                          [False, True])]


def _approved_events(engine) -> list[dict]:
    with db.session_scope(engine) as session:
        return [e.payload["data"] for e in session.exec(select(Event).where(Event.type == "sitrep.approved")).all()]


def test_cli_flash_under_embargo_goes_out_at_the_release(cli_sink, cli, engine):
    assert cli("webhook", "add", "https://hooks.example.org/in", "--event", "sitrep.approved").exit_code == 0
    release = (datetime.now(timezone.utc) + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    approved = cli("--as", "chief", "sitrep", "approve", "1", "--flash", "--release-at", release.isoformat())
    assert approved.exit_code == 0 and "at the release" in approved.output, approved.output
    listed = cli("sitrep", "list").output
    assert "FLASH" in listed and "scheduled for" in listed
    assert cli("run", "--once", "--now", (release - timedelta(minutes=1)).isoformat()).exit_code == 0
    assert _cli_mails(cli_sink) == []  # not before the release, for any cadence
    assert _approved_events(engine) == []  # nor a word to event webhooks
    assert cli("run", "--once", "--now", (release + timedelta(seconds=10)).isoformat()).exit_code == 0
    got = _cli_mails(cli_sink)
    assert sorted(m["To"] for m in got) == ["daily@example.org", "now@example.org", "weekly@example.org"]
    assert {m["Subject"][:7] for m in got} == {"FLASH: "}
    assert [(e["sitrep_id"], e["flash"]) for e in _approved_events(engine)] == [(1, True)]  # at the release
    # The next daily and weekly windows after the release leave it out.
    assert cli("run", "--once", "--now", (release + timedelta(days=8)).isoformat()).exit_code == 0
    assert len(_cli_mails(cli_sink)) == 3


def test_cancelling_a_flash_release_leaves_a_plain_draft(cli_sink, cli):
    release = datetime.now(timezone.utc) + timedelta(hours=3)
    assert cli("--as", "chief", "sitrep", "approve", "1", "--flash", "--release-at", release.isoformat()).exit_code == 0
    assert cli("--as", "chief", "sitrep", "release", "1", "--cancel").exit_code == 0
    shown = json.loads(cli("sitrep", "show", "1", "--json").stdout)
    assert shown["status"] == "draft" and shown["flash"] is False
    assert cli("run", "--once", "--now", (release + timedelta(minutes=1)).isoformat()).exit_code == 0
    assert _cli_mails(cli_sink) == []


# --- the web page and the API -----------------------------------------------------------

def test_web_form_and_api_approve_as_flash(web):
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
        for text in (STANDARD.read_text("utf-8"), other_sitrep_text()):
            sitreps.import_parsed(session, parse(text), actor="ed")
    bearer = {"Authorization": f"Bearer {token}"}
    approved = web.client.post("/api/sitreps/1/approve", params={"flash": "true"}, headers=bearer)
    assert approved.status_code == 200 and approved.json()["flash"] is True
    web.sign_in()
    assert 'name="flash"' in web.client.get("/admin/sitreps/2").text
    done = web.form("/admin/sitreps/2/approve", {"flash": "true"}, page="/admin/sitreps/2")
    assert done.status_code == 200 and "approved as a FLASH" in done.text
    listed = web.client.get("/admin/sitreps").text
    assert listed.count('<span class="badge flash">FLASH</span>') == 2
    assert '<span class="badge flash">FLASH</span>' in web.client.get("/admin/sitreps/2").text
    assert [s["flash"] for s in web.client.get("/api/sitreps", headers=bearer).json()["items"]] == [True, True]
    actors = {(e["actor_kind"], e["actor"]) for n in (1, 2) for e in _audit(web.engine, f"sitrep:{n}")
              if e["action"] == "sitrep.approved" and e["changes"].get("flash") == [False, True]}
    assert actors == {("token", "cms"), ("user", "editor")}


def test_the_sitrep_approved_event_says_flash(engine):
    with db.session_scope(engine) as session:
        endpoints.add(session, "https://hooks.example.org/in", events=["sitrep.approved"])
    seed(engine, approved_at=None)
    with db.session_scope(engine) as session:
        (event,) = session.exec(select(Event).where(Event.type == "sitrep.approved")).all()
        assert event.payload["data"]["flash"] is True


def test_the_preview_of_a_digest_leaves_out_what_went_out_in_a_flash(engine):
    from dispatch import compose

    seed(engine)
    with db.session_scope(engine) as session:
        daily = session.exec(select(Subscriber).where(Subscriber.address == "daily@example.org")).one()
        before = compose.preview(session, daily.id, now=NEXT_MORNING, status=daily.status)
    assert before.digest is None and "FLASH" in before.reason  # being fanned out: it will reach them
    planner.plan_flash(engine, now=APPROVED + timedelta(seconds=5))
    with db.session_scope(engine) as session:
        after = compose.preview(session, daily.id, now=NEXT_MORNING, status=SubscriberStatus.active)
    assert after.digest is None and "reached them in a FLASH" in after.reason


def test_the_flash_benchmark_runs_on_a_small_list(tmp_path):
    """A smoke test: every stage ran and reported; no figure is judged here."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    proc = subprocess.run([sys.executable, str(root / "bench" / "flash.py"), "--subscribers", "300",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["subscribers"] == 300 and 0 < result["flash_deliveries"] == result["ledger_rows"]


def test_flash_deliveries_are_claimed_ahead_of_a_digest_backlog(engine):
    """A FLASH is sent at once, even behind a morning's digests."""
    with db.session_scope(engine) as session:
        ids = [subscribers.add_subscriber(session, f"r{n}@example.org", prefs=Preferences()).id for n in range(6)]
        backlog = [(i, digest.Window(key="daily:2026-11-27", start=APPROVED, end=NEXT_MORNING, sitrep_ids=(1,)))
                   for i in ids]
        ledger.plan_many(session, backlog, now=NEXT_MORNING)
        flashes = [(i, digest.Window(key="flash:2@20261127T090500Z", start=NEXT_MORNING, end=NEXT_MORNING,
                                     sitrep_ids=(2,))) for i in ids[:3]]
        ledger.plan_many(session, flashes, now=NEXT_MORNING + timedelta(minutes=5))
    later = NEXT_MORNING + timedelta(minutes=6)
    with db.session_scope(engine) as session:
        first = ledger.claim(session, now=later, limit=4)
        second = ledger.claim(session, now=later, limit=4)
        assert ledger.claim(session, now=later, limit=4, notices=True) == []  # notices stay their own
    assert [c.window_key[:6] for c in first] == ["flash:"] * 3
    assert [c.window_key[:6] for c in second] == ["daily:"] * 4


def test_the_flash_claim_reads_its_own_partial_index(sqlite_url):
    """Not the digest backlog: SQLite's planner takes the partial index."""
    engine = db.create_engine(sqlite_url)
    from dispatch import bootstrap

    bootstrap.init_database(engine)
    query = select(Delivery.id).where(ledger._FLASH_DUE, Delivery.next_attempt_at <= APPROVED).order_by(
        Delivery.next_attempt_at, Delivery.id).limit(10)
    with engine.connect() as connection:
        compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(row) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    engine.dispose()
    assert "ix_delivery_flash_due" in plan, plan


def test_web_and_api_flash_approvals_keep_the_two_person_rule(database_url, engine, mail_sink, tmp_path):
    from dispatch.desk.roles import Role
    from tests.webtools import make_web

    web = make_web(database_url, engine, mail_sink, tmp_path / "mail", two_person_rule=True)
    with web.client:
        with db.session_scope(engine) as session:
            admins.create_admin(session, "eli", "correct horse battery", role=Role.approver)
            _, token = admins.create_token(session, "cms", role=Role.admin)
        bearer = {"Authorization": f"Bearer {token}"}
        sitrep_id = web.client.post("/api/sitreps", json={"text": STANDARD.read_text("utf-8")},
                                    headers=bearer).json()["sitrep"]["id"]
        refused = web.client.post(f"/api/sitreps/{sitrep_id}/approve", params={"flash": "true"}, headers=bearer)
        assert refused.status_code == 403 and "two-person" in refused.json()["detail"]
        assert web.client.get(f"/api/sitreps/{sitrep_id}", headers=bearer).json()["status"] == "draft"
        web.sign_in("eli", "correct horse battery")
        done = web.form(f"/admin/sitreps/{sitrep_id}/approve", {"flash": "true"}, page=f"/admin/sitreps/{sitrep_id}",
                        follow_redirects=False)
        assert done.status_code == 303
        shown = web.client.get(f"/api/sitreps/{sitrep_id}", headers=bearer).json()
        assert shown["approved_by"] == "eli" and shown["flash"] is True


def test_the_preview_of_an_immediate_reader_shows_a_flash_as_a_flash(engine):
    from dispatch import compose

    seed(engine)
    with db.session_scope(engine) as session:
        now = session.exec(select(Subscriber).where(Subscriber.address == "now@example.org")).one()
        before = compose.preview(session, now.id, now=APPROVED + timedelta(seconds=1), status=now.status)
    assert [d.window_key[:6] for d in before.digests] == ["flash:"] and before.digest.flash
    planner.plan_flash(engine, now=APPROVED + timedelta(seconds=2))
    with db.session_scope(engine) as session:
        queued = compose.preview(session, now.id, now=APPROVED + timedelta(seconds=3), status=SubscriberStatus.active)
    assert [d.window_key[:6] for d in queued.digests] == ["flash:"]  # planned, not yet sent


def test_cli_import_approve_flash_is_approve_flash(cli_sink, cli, engine, tmp_path, monkeypatch):
    other = tmp_path / "other.txt"
    other.write_text(other_sitrep_text(), "utf-8")
    alone = cli("--as", "chief", "sitrep", "import", other, "--flash")
    assert alone.exit_code == 2 and "give --approve too" in alone.output, alone.output
    mine = cli("--as", "chief", "sitrep", "import", other, "--approve", "--flash")
    assert mine.exit_code == 2 and "two-person rule" in mine.output  # as for any approval of one's own import
    assert [s["id"] for s in json.loads(cli("sitrep", "list", "--json").stdout)] == [1]  # neither imported it
    monkeypatch.setenv("DISPATCH_TWO_PERSON_RULE", "false")
    done = cli("--as", "chief", "sitrep", "import", other, "--approve", "--flash")
    assert done.exit_code == 0 and "FLASH · approved" in done.output, done.output
    new_id = int(done.output.split("imported #")[1].split()[0])  # PostgreSQL's sequence counts the refused one
    shown = json.loads(cli("sitrep", "show", str(new_id), "--json").stdout)
    assert (shown["status"], shown["flash"]) == ("approved", True)
    assert cli("run", "--once").exit_code == 0
    got = _cli_mails(cli_sink)
    assert sorted(m["To"] for m in got) == ["daily@example.org", "now@example.org", "weekly@example.org"]
    assert {m["Subject"] for m in got} == {"FLASH: Port Talks Resume in Odesa"}
    approval = [e for e in _audit(engine, f"sitrep:{new_id}") if e["action"] == "sitrep.approved"]
    assert [(e["actor"], e["changes"]["flash"]) for e in approval] == [("chief", [False, True])]
    assert "--approve: approve each as a FLASH" in " ".join(cli("sitrep", "import", "--help").output.split())
