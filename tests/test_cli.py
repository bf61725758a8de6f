"""The CLI through typer's test runner, on a SQLite file in a temporary folder."""

import json
import shutil
from pathlib import Path

import pytest

from dispatch import db


from .conftest import FIXTURES


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_help_explains_every_group(run):
    out = ok(run("--help")).output
    for command in ("init", "config", "sitrep", "subscriber", "slack", "demo", "regions", "analysts"):
        assert command in out


def test_init_creates_the_default_database_and_is_repeatable(run, tmp_path):
    head = db.head_revision(db.create_engine("sqlite://"))
    assert f"schema none → {head}; 7 region(s) added" in ok(run("init")).output
    assert (tmp_path / "subscribers.db").exists()
    assert f"schema {head} is current; 0 region(s) added" in ok(run("init")).output


def test_batch_import_keeps_good_files_and_lists_bad_ones(run, tmp_path):
    result = run("sitrep", "import", FIXTURES / "standard.txt", FIXTURES / "bad_date.txt",
                 FIXTURES / "bad_binary.png", FIXTURES / "star_bullets_wrapped.txt")
    assert result.exit_code == 2
    assert "imported #1 Port Strike Halts Grain Shipments from Odesa" in result.stdout
    assert "imported #2 Snap Election Called in Japan" in result.stdout
    errors = result.stderr.splitlines()
    assert any("bad_date.txt:3: cannot read the date" in line for line in errors)
    assert any("bad_binary.png: this is a binary file" in line for line in errors)
    assert "2 of 4 file(s) not imported" in result.stderr
    listed = json.loads(ok(run("sitrep", "list", "--json")).stdout)
    assert [s["title"] for s in listed] == ["Snap Election Called in Japan",
                                            "Port Strike Halts Grain Shipments from Odesa"]


@pytest.mark.parametrize("name, reason", [
    ("bad_empty.txt", "the file is empty"),
    ("bad_no_title.txt", "no title and no date"),
    ("bad_no_bullets.txt", "has no bullets"),
    ("bad_no_sections.txt", "no 'What has Happened:' section"),
    ("missing.txt", "cannot read the file"),
])
def test_bad_file_is_one_line_exit_2_and_writes_nothing(run, name, reason):
    result = run("sitrep", "import", FIXTURES / name)
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert name in first and reason in first
    assert json.loads(ok(run("sitrep", "list", "--json")).stdout) == []


def test_importing_the_same_file_twice_says_so(run, tmp_path):
    ok(run("sitrep", "import", FIXTURES / "standard.txt"))
    copy = tmp_path / "copy.txt"
    shutil.copy(FIXTURES / "standard.txt", copy)
    result = ok(run("sitrep", "import", copy))
    assert "already there as #1" in result.stdout
    assert len(json.loads(run("sitrep", "list", "--json").stdout)) == 1


def test_approval_workflow_and_show(run):
    ok(run("sitrep", "import", FIXTURES / "standard.txt"))
    ok(run("sitrep", "tag", "1", "--region", "europe-eurasia"))
    assert "approved #1" in ok(run("sitrep", "approve", "1", "--by", "chief")).stdout
    again = run("sitrep", "approve", "1")
    assert again.exit_code == 1 and "already approved" in again.stderr
    ok(run("sitrep", "withdraw", "1", "--reason", "superseded", "--by", "chief"))
    shown = json.loads(ok(run("sitrep", "show", "1", "--json")).stdout)
    assert shown["status"] == "withdrawn" and shown["regions"] == ["europe-eurasia"]
    assert [c["action"] for c in shown["changes"]] == ["imported", "tagged", "approved", "withdrawn"]
    assert shown["commentary"][0]["analyst"] == "Dana Whitfield"
    text = ok(run("sitrep", "show", "1")).stdout
    assert "What has Happened" in text and "Colonel Dana Whitfield" in text
    assert run("sitrep", "show", "42").exit_code == 1


def test_edit_from_corrected_file(run, tmp_path):
    ok(run("sitrep", "import", FIXTURES / "standard.txt"))
    corrected = tmp_path / "corrected.txt"
    corrected.write_text((FIXTURES / "standard.txt").read_text().replace("a dozen", "twenty"))
    out = ok(run("sitrep", "edit", "1", "--from-file", corrected)).stdout
    assert "changed: commentary, bullets" in out
    shown = json.loads(run("sitrep", "show", "1", "--json").stdout)
    assert "about twenty grain carriers" in shown["summary"][0]
    assert shown["status"] == "draft"
    bad = run("sitrep", "edit", "1", "--date", "03/03/2025")
    assert bad.exit_code == 2 and "--date" in bad.stderr


def test_subscriber_add_list_show_edit_remove(run):
    ok(run("sitrep", "import", FIXTURES / "standard.txt"))
    out = ok(run("subscriber", "add", "reader@example.org", "--name", "Reader", "--region", "americas,europe-eurasia",
                 "--analyst", "Dana Whitfield", "--cadence", "weekly", "--weekday", "fri", "--at", "6:30",
                 "--tz", "Europe/London", "--format", "text")).stdout
    assert "added #1 reader@example.org" in out and "weekly on friday at 06:30 Europe/London" in out
    shown = json.loads(ok(run("subscriber", "show", "reader@example.org", "--json")).stdout)
    assert shown["regions"] == ["americas", "europe-eurasia"] and shown["analysts"] == ["Dana Whitfield"]
    assert shown["status"] == "active"
    ok(run("subscriber", "edit", "1", "--all-regions", "--status", "disabled"))
    listed = json.loads(ok(run("subscriber", "list", "--status", "disabled", "--json")).stdout)
    assert [(s["id"], s["regions"]) for s in listed] == [(1, [])]
    ok(run("subscriber", "remove", "1", "--yes"))
    assert json.loads(run("subscriber", "list", "--json").stdout) == []


@pytest.mark.parametrize("args, message", [
    (["not-an-address"], "email: 'not-an-address' is not a valid address"),
    (["r@example.org", "--tz", "Moon/Base"], "tz: unknown time zone 'Moon/Base'"),
    (["r@example.org", "--at", "7pm"], "at: '7pm' is not a time of day as HH:MM"),
    (["r@example.org", "--region", "atlantis"], "region: unknown region 'atlantis'; allowed: americas"),
    (["r@example.org", "--cadence", "hourly"], "'hourly' is not one of"),
])
def test_subscriber_add_bad_input(run, args, message):
    result = run("subscriber", "add", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert json.loads(ok(run("subscriber", "list", "--json")).stdout) == []


def test_csv_import_and_export_round_trip(run, tmp_path):
    ok(run("sitrep", "import", FIXTURES / "standard.txt"))
    source = tmp_path / "in.csv"
    source.write_text("email,name,regions,analysts,cadence,at,tz,format\n"
                      "a@example.org,A,americas,Dana Whitfield,daily,07:00,America/Chicago,html\n"
                      "broken,B,,,,,,\n"
                      "c@example.org,C,europe-eurasia;global,,weekly,09:00,Asia/Tokyo,text\n")
    result = run("subscriber", "import", source)
    assert result.exit_code == 2
    assert "2 added, 0 already there, 1 rejected" in result.stdout
    assert "line 3: email: 'broken' is not a valid address" in " ".join(result.stderr.split())
    out = tmp_path / "out.csv"
    ok(run("subscriber", "export", out))
    assert out.read_text().splitlines() == [
        "email,name,regions,analysts,cadence,at,tz,weekday,format,status,kind",
        "a@example.org,A,americas,Dana Whitfield,daily,07:00,America/Chicago,mon,html,active,email",
        "c@example.org,C,europe-eurasia;global,,weekly,09:00,Asia/Tokyo,mon,text,active,email",
    ]
    assert "2 already there" in ok(run("subscriber", "import", out)).stdout


def test_slack_channels(run):
    ok(run("slack", "add", "C0123ABCD", "--name", "#desk", "--region", "global", "--cadence", "immediate"))
    ok(run("slack", "add", "https://hooks.slack.com/services/T0/B0/abc"))
    bad = run("slack", "add", "#general")
    assert bad.exit_code == 2 and "channel ID" in bad.stderr
    listed = json.loads(ok(run("slack", "list", "--json")).stdout)
    assert [(s["kind"], s["address"]) for s in listed] == [
        ("slack", "C0123ABCD"), ("slack", "https://hooks.slack.com/services/T0/B0/abc")]


def test_config_masks_secrets(run, monkeypatch):
    monkeypatch.setenv("DISPATCH_SMTP_PASSWORD", "s3cret-pass")
    monkeypatch.setenv("DISPATCH_SMTP_HOST", "relay.example.org")
    shown = json.loads(ok(run("config", "--json")).stdout)
    assert shown["smtp_host"] == "relay.example.org" and shown["smtp_password"] == "********"
    assert "s3cret-pass" not in ok(run("config")).stdout


def test_invalid_settings_are_one_clear_line(run, monkeypatch):
    monkeypatch.setenv("DISPATCH_SMTP_PORT", "many")
    result = run("sitrep", "list")
    assert result.exit_code == 2 and "invalid settings" in result.stderr and "smtp_port" in result.stderr


def test_database_url_option(run, tmp_path):
    ok(run("--database-url", f"sqlite:///{tmp_path / 'other.db'}", "init"))
    assert (tmp_path / "other.db").exists() and not (tmp_path / "subscribers.db").exists()


def test_demo_from_a_clean_folder(run, tmp_path):
    out = ok(run("demo")).stdout
    assert (tmp_path / "subscribers.db").exists()
    assert out.count("imported #") == 4 and out.count("approved #") == 4
    assert "C0DEMOASIA" in out
    sitreps = json.loads(run("sitrep", "list", "--json").stdout)
    assert {s["status"] for s in sitreps} == {"approved"}
    log = json.loads(ok(run("log", "--json")).stdout)
    assert len(log) == 10 and {d["status"] for d in log} == {"sent"}
    assert len(list((tmp_path / "demo-output" / "mail").glob("*.eml"))) == 8
    assert len(list((tmp_path / "demo-output" / "slack").rglob("*.json"))) == 2
    # The sink bounced one reader's digest to `dispatch inbound`, over SMTP: she is bounced now.
    assert "A bounce arrived" in out and "reader is now bounced" in out
    readers = {r["address"]: r for r in json.loads(ok(run("subscriber", "list", "--json")).stdout)}
    assert readers["amara.diallo@example.org"]["status"] == "bounced"
    assert {r["status"] for a, r in readers.items() if a != "amara.diallo@example.org"} == {"active"}
    again = ok(run("demo")).stdout  # re-running is harmless: nothing is sent twice
    assert again.count("already there") >= 4 + 7
    assert len(json.loads(run("log", "--json").stdout)) == 10


def test_run_once_log_and_retry(run, tmp_path, monkeypatch):
    from .servers import scripted_smtp

    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.refuse["gone@example.org"] = "550 5.1.1 no such user"
    monkeypatch.setenv("DISPATCH_SMTP_HOST", sink.host)
    monkeypatch.setenv("DISPATCH_SMTP_PORT", str(sink.port))
    try:
        ok(run("sitrep", "import", FIXTURES / "standard.txt"))
        ok(run("subscriber", "add", "ok@example.org", "--cadence", "immediate"))
        ok(run("subscriber", "add", "gone@example.org", "--cadence", "immediate"))
        ok(run("sitrep", "approve", "1"))
        result = run("run", "--once")
        assert result.exit_code == 1  # something failed
        assert "sent" in result.stdout and "failed" in result.stdout and "550" in result.stdout
        log = json.loads(ok(run("log", "--json")).stdout)
        assert {(d["subscriber"], d["status"]) for d in log} == {("ok@example.org", "sent"),
                                                                 ("gone@example.org", "failed")}
        failed_id = next(d["id"] for d in log if d["status"] == "failed")
        attempts = json.loads(ok(run("log", "--delivery", failed_id, "--json")).stdout)
        assert [a["outcome"] for a in attempts] == ["failed"]
        assert json.loads(ok(run("log", "--status", "sent", "--json")).stdout)[0]["subscriber"] == "ok@example.org"
        del handler.refuse["gone@example.org"]
        assert "requeued 1 delivery" in ok(run("retry", failed_id)).stdout
        assert run("retry").exit_code == 2
        ok(run("run", "--once"))
        assert {d["status"] for d in json.loads(run("log", "--json").stdout)} == {"sent"}
        assert sorted(to for to, _ in handler.received) == ["gone@example.org", "ok@example.org"]
    finally:
        sink.stop()


SAMPLES = sorted((Path(__file__).parent.parent / "dispatch" / "samples").glob("*.txt"))


def test_preview_shows_the_next_digest_or_says_why_not(run, tmp_path):
    ok(run("sitrep", "import", *SAMPLES))
    ok(run("subscriber", "add", "ana.ortiz@example.org", "--region", "americas", "--tz", "America/New_York"))
    ok(run("subscriber", "add", "kenji.sato@example.org", "--analyst", "Dana Whitfield", "--tz", "Asia/Tokyo"))
    ok(run("subscriber", "add", "amara.diallo@example.org", "--region", "sub-saharan-africa"))
    ok(run("slack", "add", "C0DEMOASIA", "--region", "east-asia-pacific", "--cadence", "immediate"))
    for number in range(1, 5):
        ok(run("sitrep", "approve", number))
    out = ok(run("preview", "ana.ortiz@example.org")).stdout
    assert "next delivery" in out and "Subject: Chile and Argentina Agree on Lithium Export Rules" in out
    assert "Manage your preferences:\nhttp://localhost:8000/preferences/" in out
    page = tmp_path / "kenji.html"
    out = ok(run("preview", "kenji.sato@example.org", "--html", page)).stdout
    html = page.read_text()
    # Kenji follows Dana Whitfield: her two SITREPs, her quotes marked.
    assert "Undersea Cable Cut in the Baltic Sea" in html and "Large-Scale Drills" in html
    assert "Fuel Blockade" not in html and "you follow" in html and 'style="' in html
    slack = json.loads(ok(run("preview", "C0DEMOASIA", "--json")).stdout)
    assert slack["would_send"] and slack["slack"][0]["text"] == "SITREP: Large-Scale Drills Near the Taiwan Strait"
    # Before anything was approved, the window is empty: said plainly.
    out = ok(run("preview", "ana.ortiz@example.org", "--at", "2020-01-01T08:00")).stdout
    assert "Nothing would be sent: no SITREP has been approved in this window yet." in out
    ok(run("subscriber", "edit", "amara.diallo@example.org", "--region", "south-central-asia"))
    out = ok(run("preview", "amara.diallo@example.org")).stdout
    assert "none matches the subscriber's regions South and Central Asia" in out
    ok(run("subscriber", "edit", "amara.diallo@example.org", "--status", "disabled"))
    assert "the subscriber is disabled" in ok(run("preview", "amara.diallo@example.org")).stdout
    bad = run("preview", "ana.ortiz@example.org", "--at", "tomorrow")
    assert bad.exit_code == 2 and "ISO-8601" in bad.stderr


def test_a_database_that_cannot_be_reached_is_one_line(tmp_path):
    import subprocess
    import sys

    from dispatch.sink import _free_port

    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{_free_port('127.0.0.1')}/nowhere"
    done = subprocess.run([sys.executable, "-m", "dispatch", "--database-url", url, "subscriber", "list"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot use the database" in done.stderr and "s3cret" not in done.stderr + done.stdout


def test_a_database_locked_past_the_busy_timeout_is_one_line(run, tmp_path, monkeypatch):
    import sqlite3

    ok(run("init"))
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)  # instead of 30 s
    holder = sqlite3.connect(tmp_path / "subscribers.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the timeout
    try:
        result = run("subscriber", "add", "late@example.org")
    finally:
        holder.execute("ROLLBACK")
    assert result.exit_code == 1, result.output
    assert "the database is busy" in result.stderr and "0.3 s" in result.stderr
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a traceback
    assert "late@example.org" not in ok(run("subscriber", "list")).stdout  # nothing was written
