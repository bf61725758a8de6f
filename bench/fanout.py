#!/usr/bin/env python3
"""The fan-out benchmark: how close does `dispatch run --once` come to the
SMTP wire, and does its memory stay flat as the list grows?

    python bench/fanout.py --report                # issue 19's table, in one command (see below)
    python bench/fanout.py --subscribers 10000 [--digests large|small] [--sitreps M]
                           [--database-url URL] [--connections N] [--senders N]
                           [--baseline-connections 1 4] [--ledger-rows 1000000] [--out bench/results.jsonl]

It makes a fresh database with N subscribers (seeded random preferences) and
approves M SITREPs. Two shapes of list (``--digests``):
  large  some all-regions readers, most 1–3 regions, some following 1–2
         analysts: digests of about 36 KB (20 SITREPs);
  small  every reader follows one region (a tenth also 1–2 analysts):
         2–4 SITREPs each, about 17 KB (11 SITREPs).
Then, against the same sink:
  1. the pipeline, as `dispatch run --once` runs it, as a subprocess timed
     from its start (imports included) to its exit: plan, render, build,
     send, record every delivery; its peak memory is the largest RSS of
     any one of its processes and the peak of their summed PSS (with
     several sender processes, pages shared after fork are counted once);
  2. the wire baselines: as many messages, pre-built as bytes (a random
     sample of what the pipeline sent, rebuilt, so the sizes match), sent
     with smtplib's sendmail over 1 and over 4 persistent connections
     (``--baseline-connections``), threads in this process.
It prints messages/s for each, the pipeline's ratio to the better baseline,
the planning time, the peak memory, the time from the start of planning to
the last message recorded, and the time of an idle planning tick, and
appends a JSON line to the results file.

``--report`` runs issue 19's two cases one after the other and prints them
as one Markdown table: 10,000 readers of small digests (both baselines and
the pipeline), and 100,000 readers of large digests end to end.

The sink is Postfix's smtp-sink (Debian: `apt-get install postfix`, choosing
"No configuration"). aiosmtpd tops out near 500 messages/s and would measure
itself, so a slow sink is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from dispatch import bootstrap, db, sitreps
from dispatch.models import Delivery, Subscriber, SubscriberAnalyst, SubscriberRegion
from dispatch.sink import SlackSink
from dispatch.sitrep_text import parse

REGIONS = ["americas", "europe-eurasia", "middle-east-north-africa", "sub-saharan-africa",
           "south-central-asia", "east-asia-pacific", "global"]
PLACES = {"americas": "Brazil", "europe-eurasia": "Poland", "middle-east-north-africa": "Egypt",
          "sub-saharan-africa": "Kenya", "south-central-asia": "India", "east-asia-pacific": "Japan",
          "global": "the United Nations"}
ANALYSTS = ["Dana Whitfield", "Samir Haddad", "Lena Okafor", "Mei Lin Zhao", "Grace Holloway", "Tomas Varga"]
ZONES = ["UTC", "Europe/London", "America/New_York", "Asia/Tokyo", "Africa/Nairobi"]
APPROVED = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
RUN_AT = datetime(2026, 11, 27, 23, tzinfo=timezone.utc)  # after every zone's 07:00
MIN_SINK_RATE = 1500
BASELINE_SAMPLE = 300  # distinct messages the baseline sends in turn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink() -> tuple[subprocess.Popen, int]:
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if binary is None:
        sys.exit("bench: needs Postfix's smtp-sink. On Debian: "
                 "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; "
                 "apt-get install -y postfix")
    port = free_port()
    proc = subprocess.Popen([binary, "-u", "nobody", "-4", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("bench: smtp-sink did not start")


def send_prebuilt(port: int, messages: list[bytes], count: int, connections: int) -> float:
    """The wire baseline: pre-built bytes (taken in turn) over persistent connections."""
    shares = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]

    def worker(n: int) -> None:
        conn = smtplib.SMTP("127.0.0.1", port)
        for i in range(n):
            conn.sendmail("news@example.org", [f"reader{i}@example.org"], messages[i % len(messages)])
        conn.quit()

    threads = [threading.Thread(target=worker, args=(n,)) for n in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - started)


def sitrep_text(rng: random.Random, number: int) -> str:
    regions = rng.sample(REGIONS[:-1], rng.choice([1, 1, 2]))
    places = " and ".join(PLACES[r] for r in regions)
    bullets = "\n".join(f"  • Development {b} involving {places}: " + "officials described the situation as "
                        "fluid while talks continued through the week. " * rng.randint(1, 3) for b in range(4))
    quotes = "\n\n".join(f"“The events in {places} matter because " + "they shift the balance in the region. "
                         * rng.randint(3, 6) + f"”\n\n- Dr. {a}" for a in rng.sample(ANALYSTS, 2))
    return (f"Bench SITREP – Report {number} on {places}\n\nNovember {1 + number % 25}, 2026\n"
            f"What has Happened:\n\n{bullets}\nWhy it Matters:\n\n{quotes}\n")


SITREPS = {"large": 20, "small": 11}  # small: about 2–4 SITREPs for a reader of one region


def seed(url: str, *, subscribers: int, sitrep_count: int, slack_url: str, rng: random.Random,
         digests: str = "large") -> None:
    engine = db.create_engine(url)
    bootstrap.init_database(engine)
    with db.session_scope(engine) as session:
        for n in range(sitrep_count):
            sitreps.import_parsed(session, parse(sitrep_text(rng, n)), actor="bench")
        analyst_ids = dict(session.execute(sa.text("SELECT slug, id FROM analyst")).all())
    joined = APPROVED - timedelta(days=7)
    with engine.begin() as conn:
        rows, region_rows, analyst_rows = [], [], []
        for i in range(1, subscribers + 1):
            slack = i % 2000 == 0  # a few Slack channels
            rows.append({"id": i, "kind": "slack" if slack else "email",
                         "address": f"{slack_url}{i}" if slack else f"reader{i}@example.org",
                         "name": f"Reader {i}", "timezone": rng.choice(ZONES), "send_at": "07:00",
                         "cadence": "daily", "weekday": 0, "format": "text" if rng.random() < 0.3 else "html",
                         "status": "active", "bounce_count": 0, "created_at": joined})
            shape = rng.random()
            if digests == "small":  # one region each (of those SITREPs are about)
                region_rows.append({"subscriber_id": i, "region_slug": rng.choice(REGIONS[:-1])})
            elif shape >= 0.15:  # 15 % want every region
                region_rows += [{"subscriber_id": i, "region_slug": r} for r in rng.sample(REGIONS, rng.randint(1, 3))]
            if rng.random() < (0.1 if digests == "small" else 0.2):
                analyst_rows += [{"subscriber_id": i, "analyst_id": analyst_ids[a]}
                                 for a in rng.sample(sorted(analyst_ids), rng.randint(1, 2))]
            if len(rows) == 5000 or i == subscribers:
                conn.execute(sa.insert(Subscriber.__table__), rows)
                if region_rows:
                    conn.execute(sa.insert(SubscriberRegion.__table__), region_rows)
                if analyst_rows:
                    conn.execute(sa.insert(SubscriberAnalyst.__table__), analyst_rows)
                rows, region_rows, analyst_rows = [], [], []
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT setval('subscriber_id_seq', (SELECT max(id) FROM subscriber))")
    with db.session_scope(engine) as session:
        for sitrep in sitreps.list_sitreps(session, limit=sitrep_count):
            sitreps.approve_sitrep(session, sitrep.id, by="bench", at=APPROVED)
    engine.dispose()


def sent_messages(url: str, *, sample: int, rng: random.Random) -> list[bytes]:
    """The baseline's messages: a random sample of what the pipeline sent,
    rebuilt the way it built them (same digests, same 8bit MIME), so the wire
    carries messages of the same sizes in the same proportions."""
    from dispatch import compose, digest, views
    from dispatch.adapters.smtp import SmtpAdapter
    from dispatch.config import Settings

    engine = db.create_engine(url)
    with db.session_scope(engine) as session:
        rows = session.execute(
            sa.select(Delivery.id, Delivery.subscriber_id, Delivery.window_key, Delivery.sitrep_ids)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.status == "sent", Subscriber.kind == "email")).all()
        picked = rng.sample(rows, min(sample, len(rows)))
        people = views.readers(session, {r.subscriber_id for r in picked})
        current = {s.id: s for s in views.approved_sitreps(session)}
    composer = compose.Composer(Settings(database_url=url, secret_key="bench"), engine)
    adapter = SmtpAdapter(host="127.0.0.1", port=25, mail_from="Bench <news@example.org>")
    messages = []
    for r in picked:
        recipient = people[r.subscriber_id][1]
        content = composer.email(digest.build_digest(recipient, r.window_key, [current[i] for i in r.sitrep_ids]))
        messages.append(adapter.build(recipient.address, content, delivery_id=r.id, eight_bit=True)[1])
    engine.dispose()
    return messages


def tree_pss_kb(pid: int) -> int:
    """Summed PSS of a process and its descendants (Linux; 0 where unreadable)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except OSError:
            continue
    return total


def run_pipeline(url: str, *, port: int, slack_base: str, connections: int,
                 senders: int | None = None) -> dict:
    """`dispatch run --once` as a subprocess: its summary, wall time (start-up
    included), the largest RSS of any of its processes and its tree's peak PSS."""
    env = {**os.environ, "DISPATCH_DATABASE_URL": url, "DISPATCH_SMTP_HOST": "127.0.0.1",
           "DISPATCH_SMTP_PORT": str(port), "DISPATCH_MAIL_FROM": "Bench <news@example.org>",
           "DISPATCH_SMTP_POOL_SIZE": str(connections),
           # A thread for each connection: with pipelining a thread holds its connection
           # for one round trip a message, and a spare thread sharing one was measured
           # slower (2.3 against 2.1 s for 10,000 small digests), not faster.
           "DISPATCH_SENDER_THREADS": str(connections),
           "DISPATCH_SLACK_BASE_URL": slack_base, "DISPATCH_SLACK_BOT_TOKEN": "xoxb-bench",
           "DISPATCH_SLACK_MIN_INTERVAL": "0", "DISPATCH_SECRET_KEY": "bench", "DISPATCH_BATCH_SIZE": "200",
           "DISPATCH_SLACK_WEBHOOK_HOSTS": "127.0.0.1"}  # the Slack sink's webhooks
    # As an installed package runs: with its modules compiled (pip compiles at
    # install; a machine with PYTHONDONTWRITEBYTECODE would otherwise compile
    # dispatch's own modules from source at every start, some 0.1 s).
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "dispatch"), quiet=1)
    command = [sys.executable, "-m", "dispatch", "run", "--once", "--json", "--now", RUN_AT.isoformat()]
    if senders is not None:
        command += ["--senders", str(senders)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        peak_pss = 0
        while proc.poll() is None:
            peak_pss = max(peak_pss, tree_pss_kb(proc.pid))
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode not in (0, 1):
        sys.exit(f"bench: the pipeline failed:\n{stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest of its processes
    return {"summary": json.loads(stdout), "seconds": elapsed, "peak_rss_kb": peak_kb, "peak_pss_kb": peak_pss}


def idle_tick(url: str, ledger_rows: int) -> tuple[float, int]:
    """A planning tick when nothing is due, with a ledger of the given size."""
    from dispatch import planner

    engine = db.create_engine(url)
    with engine.begin() as conn:
        existing = conn.execute(sa.select(sa.func.count()).select_from(Delivery)).scalar()
        subscriber_ids = [r[0] for r in conn.execute(sa.select(Subscriber.id))]
        batch = []
        for n in range(max(0, ledger_rows - existing)):
            batch.append({"subscriber_id": subscriber_ids[n % len(subscriber_ids)], "window_key": f"old:{n}",
                          "sitrep_ids": [1], "status": "sent", "attempts": 1, "created_at": APPROVED,
                          "next_attempt_at": APPROVED, "sent_at": APPROVED})
            if len(batch) == 20000:
                conn.execute(sa.insert(Delivery.__table__), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(Delivery.__table__), batch)
        total = conn.execute(sa.select(sa.func.count()).select_from(Delivery)).scalar()
    planner.plan_due(engine, now=RUN_AT + timedelta(minutes=1))  # warm
    started = time.perf_counter()
    report = planner.plan_due(engine, now=RUN_AT + timedelta(minutes=2))
    elapsed = time.perf_counter() - started
    assert report.deliveries_planned == 0
    engine.dispose()
    return elapsed, total


def run_case(*, subscribers: int, digests: str, sitreps: int | None, database_url: str | None,
             connections: int, senders: int | None, baseline_connections: list[int], ledger_rows: int,
             seed_value: int, min_sink_rate: int) -> dict:
    sitrep_count = sitreps or SITREPS[digests]
    workdir = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
    url = database_url or f"sqlite:///{workdir / 'bench.db'}"
    if url.startswith("postgresql"):
        fresh_postgres(url)
    sink, port = start_sink()
    slack = SlackSink(workdir / "slack", token="xoxb-bench").start()
    try:
        probe = send_prebuilt(port, [b"Subject: probe\r\n\r\n" + b"x" * 8000 + b"\r\n"], 500, 1)
        if probe < min_sink_rate:
            sys.exit(f"bench: the sink takes only {probe:.0f} messages/s (< {min_sink_rate}); "
                     "it would measure itself. Use Postfix's smtp-sink.")
        print(f"seeding {subscribers:,} subscribers ({digests} digests) and {sitrep_count} SITREPs …", flush=True)
        seed(url, subscribers=subscribers, sitrep_count=sitrep_count, slack_url=slack.webhook_url("bench"),
             rng=random.Random(seed_value), digests=digests)
        print("running `dispatch run --once` …", flush=True)
        run = run_pipeline(url, port=port, slack_base=slack.base_url, connections=connections, senders=senders)
        summary, elapsed = run["summary"], run["seconds"]
        sent = summary["outcomes"].get("sent", 0)
        if not sent:
            sys.exit(f"bench: the pipeline sent nothing: {summary}")
        messages = sent_messages(url, sample=BASELINE_SAMPLE, rng=random.Random(seed_value))
        mean_bytes = sum(map(len, messages)) / len(messages)
        baselines = {n: send_prebuilt(port, messages, sent, n) for n in baseline_connections}
        tick, ledger_total = idle_tick(url, ledger_rows)
    finally:
        slack.stop()
        sink.terminate()
        sink.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    wire = max(baselines.values()) if baselines else None
    pipeline = sent / elapsed
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "load": round(os.getloadavg()[0], 1)},
        "database": url.split(":", 1)[0], "subscribers": subscribers, "digests": digests, "sitreps": sitrep_count,
        "connections": connections, "senders": senders, "message_bytes": round(mean_bytes), "delivered": sent,
        "outcomes": summary["outcomes"],
        "baselines_msgs_per_s": {str(n): round(r) for n, r in baselines.items()},
        "wire_msgs_per_s": round(wire) if wire else None, "pipeline_msgs_per_s": round(pipeline),
        "ratio": round(pipeline / wire, 2) if wire else None, "pipeline_seconds": round(elapsed, 2),
        "plan_seconds": summary["plan_seconds"], "send_seconds": summary["send_seconds"],
        "plan_to_last_record_seconds": round(summary["plan_seconds"] + summary["send_seconds"], 2),
        "peak_rss_mb": round(run["peak_rss_kb"] / 1024, 1), "peak_pss_mb": round(run["peak_pss_kb"] / 1024, 1),
        "idle_tick_ms": round(tick * 1000, 1), "ledger_rows": ledger_total,
    }


def print_case(r: dict) -> None:
    for n, rate in r["baselines_msgs_per_s"].items():
        print(f"wire baseline      {rate:8.0f} messages/s ({n} connection(s), mean {r['message_bytes']:,} bytes)")
    print(f"dispatch pipeline  {r['pipeline_msgs_per_s']:8.0f} messages/s ({r['delivered']:,} delivered in "
          f"{r['pipeline_seconds']:.1f} s, start-up included; senders {r['senders'] or 'default'})")
    if r["ratio"] is not None:
        print(f"ratio              {r['ratio']:8.2f} (to the better baseline)")
    print(f"planning           {r['plan_seconds']:8.2f} s for {r['subscribers']:,} subscribers\n"
          f"plan → last record {r['plan_to_last_record_seconds']:8.2f} s\n"
          f"peak RSS           {r['peak_rss_mb']:8.1f} MB (largest process; tree PSS {r['peak_pss_mb']:.1f} MB)\n"
          f"idle planning tick {r['idle_tick_ms']:8.1f} ms with {r['ledger_rows']:,} ledger rows", flush=True)


def print_report(small: dict, large: dict) -> None:
    """Issue 19's table."""
    b = small["baselines_msgs_per_s"]
    print(f"\n| case | smtplib 1 conn | smtplib 4 conn | dispatch run --once | ratio to better | "
          f"peak RSS (largest / tree PSS) | plan → last record |\n| --- | --- | --- | --- | --- | --- | --- |\n"
          f"| 10,000 readers, {small['message_bytes'] / 1000:.1f} KB digests, {small['database']} | "
          f"{b.get('1', '—')}/s | {b.get('4', '—')}/s | {small['pipeline_msgs_per_s']}/s "
          f"({small['delivered']:,} in {small['pipeline_seconds']:.1f} s) | **{small['ratio']}** | "
          f"{small['peak_rss_mb']} / {small['peak_pss_mb']} MB | {small['plan_to_last_record_seconds']} s |\n"
          f"| 100,000 readers, {large['message_bytes'] / 1000:.1f} KB digests, {large['database']} | — | — | "
          f"{large['pipeline_msgs_per_s']}/s ({large['delivered']:,} in {large['pipeline_seconds']:.1f} s) | — | "
          f"{large['peak_rss_mb']} / {large['peak_pss_mb']} MB | **{large['plan_to_last_record_seconds']} s** |\n"
          f"\ntargets: ratio ≥ 0.8 and peak RSS ≤ 150 MB at 10k small; plan → last record ≤ 60 s at 100k large; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true",
                        help="issue 19's two cases (10k small with both baselines, 100k large end to end) as one table")
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--digests", choices=sorted(SITREPS), default="large")
    parser.add_argument("--sitreps", type=int, help="default: 20 for large digests, 11 for small")
    parser.add_argument("--database-url", help="default: a new SQLite file in a temporary folder; a "
                        "PostgreSQL URL names a server database that is dropped and created")
    parser.add_argument("--connections", type=int, default=2,
                        help="the pipeline's SMTP connections per sender process (a sender thread each)")
    parser.add_argument("--senders", type=int, help="`dispatch run --senders N` (default: dispatch's own)")
    parser.add_argument("--baseline-connections", type=int, nargs="*", default=[1, 4],
                        help="smtplib baselines to run, by connection count (default: 1 4)")
    parser.add_argument("--ledger-rows", type=int, default=0, help="fill the ledger to this size for the idle tick")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--min-sink-rate", type=int, default=MIN_SINK_RATE,
                        help="refuse a mail sink slower than this many messages/s (default %(default)s)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.jsonl")))
    args = parser.parse_args()
    common = dict(database_url=args.database_url, connections=args.connections, senders=args.senders,
                  seed_value=args.seed, min_sink_rate=args.min_sink_rate, ledger_rows=args.ledger_rows)
    if args.report:
        cases = [dict(subscribers=10_000, digests="small", sitreps=None, baseline_connections=[1, 4]),
                 dict(subscribers=100_000, digests="large", sitreps=None, baseline_connections=[])]
    else:
        cases = [dict(subscribers=args.subscribers, digests=args.digests, sitreps=args.sitreps,
                      baseline_connections=args.baseline_connections)]
    results = []
    for case in cases:
        result = run_case(**case, **common)
        print_case(result)
        with open(args.out, "a") as out:
            out.write(json.dumps(result) + "\n")
        results.append(result)
    if args.report:
        print_report(*results)


def fresh_postgres(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{parsed.database}"')


if __name__ == "__main__":
    main()
