#!/usr/bin/env python3
"""The admin side at scale (issue 14): 100,000 readers and 1,000,000
deliveries, and how fast each admin page and API list answers.

    python bench/admin.py [--readers 100000] [--deliveries 1000000] [--repeat 20]
                          [--database-url URL] [--import-rows 0] [--out bench/admin.jsonl]

It seeds a fresh database (SQLite in a temporary folder by default;
PostgreSQL with --database-url, which is dropped and made again) — readers
in batches of Core inserts, deliveries with one INSERT … SELECT over a
generated series, spread over the last ten days up to now so that "today"
holds a day's worth — then requests every page and list through the real
app (FastAPI's test client: the app and the database, without a network)
and prints p50/p95 of each, the CLI start-up times and, with
--import-rows, a CSV import's time and peak RSS. One function per
measurement: each returns rows for the table; add one and list it in
MEASUREMENTS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import REGIONS, fresh_postgres, sitrep_text  # noqa: E402

from dispatch import admins, bootstrap, db, sitreps  # noqa: E402
from dispatch.models import Subscriber, SubscriberNameWord, SubscriberRegion, name_word_rows  # noqa: E402
from dispatch.sitrep_text import parse  # noqa: E402

TARGET_SECONDS = 0.3
STATUSES = [("active", 0.90), ("unsubscribed", 0.05), ("pending", 0.03), ("bounced", 0.02)]
ADMIN = ("bench", "bench password 123")


# --- seeding -------------------------------------------------------------------------

def seed(engine, *, readers: int, deliveries: int, sitrep_count: int = 20, rng: random.Random) -> dict:
    started = time.perf_counter()
    bootstrap.init_database(engine)
    with db.session_scope(engine) as session:
        for n in range(sitrep_count):
            sitreps.import_parsed(session, parse(sitrep_text(rng, n)), actor="bench", approve=True)
        admins.create_admin(session, *ADMIN)
    joined = datetime.now(timezone.utc) - timedelta(days=30)
    statuses, weights = zip(*STATUSES)
    with engine.begin() as conn:
        rows, region_rows, word_rows = [], [], []
        for i in range(1, readers + 1):
            rows.append({"id": i, "kind": "email", "address": f"reader{i}@example.org", "name": f"Reader {i}",
                         "timezone": "UTC", "send_at": "07:00", "cadence": "daily", "weekday": 0,
                         "format": "html", "status": rng.choices(statuses, weights)[0], "bounce_count": 0,
                         "created_at": joined})
            word_rows += name_word_rows(i, rows[-1]["name"])  # as the CSV import writes them: "4242"
            if rng.random() >= 0.15:
                region_rows += [{"subscriber_id": i, "region_slug": r} for r in rng.sample(REGIONS, rng.randint(1, 3))]
            if len(rows) == 5000 or i == readers:
                conn.execute(sa.insert(Subscriber.__table__), rows)
                conn.execute(sa.insert(SubscriberRegion.__table__), region_rows)
                conn.execute(sa.insert(SubscriberNameWord.__table__), word_rows)
                rows, region_rows, word_rows = [], [], []
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT setval('subscriber_id_seq', (SELECT max(id) FROM subscriber))")
    seeded_readers = time.perf_counter() - started
    _seed_deliveries(engine, readers=readers, deliveries=deliveries, sitrep_count=sitrep_count)
    maintain(engine)
    return {"seed_readers_s": round(seeded_readers, 1), "seed_total_s": round(time.perf_counter() - started, 1)}


def maintain(engine) -> None:
    """What an operator's routine maintenance leaves: statistics, and on
    PostgreSQL what autovacuum also does after a big load — the visibility
    map, without which no index-only scan is planned (the dashboard's counts
    read the heap: 180 ms instead of 45 ms for the readers by status)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def _seed_deliveries(engine, *, readers: int, deliveries: int, sitrep_count: int) -> None:
    """One statement: row i goes to reader i mod N, ten days ending now, one
    in a hundred failed, the newest 5,000 pending, the rest sent."""
    span = timedelta(days=10).total_seconds()
    start = datetime.now(timezone.utc) - timedelta(days=10)
    params = {"n": deliveries, "readers": readers, "step": span / deliveries, "sitreps": sitrep_count,
              "pending_from": deliveries - 5000}
    status = ("CASE WHEN i % 100 = 0 THEN 'failed' WHEN i > :pending_from THEN 'pending' ELSE 'sent' END")
    if engine.dialect.name == "postgresql":
        params["start"] = start
        sql = f"""
            INSERT INTO delivery (subscriber_id, window_key, sitrep_ids, status, attempts, created_at,
                                  next_attempt_at, sent_at, last_error)
            SELECT (i % :readers) + 1, 'bench:' || i, json_build_array((i * :sitreps / :n) + 1),
                   {status}, 1, :start + i * :step * interval '1 second', NULL,
                   CASE WHEN i % 100 <> 0 AND i <= :pending_from THEN :start + i * :step * interval '1 second' END,
                   CASE WHEN i % 100 = 0 THEN 'smtp: 550 no such user' END
            FROM generate_series(1, :n) AS i"""
    else:
        params["start"] = start.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S")
        at = "strftime('%Y-%m-%d %H:%M:%f000', :start, '+' || (i * :step) || ' seconds')"
        sql = f"""
            WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series WHERE i < :n)
            INSERT INTO delivery (subscriber_id, window_key, sitrep_ids, status, attempts, created_at,
                                  next_attempt_at, sent_at, last_error)
            SELECT (i % :readers) + 1, 'bench:' || i, json_array((i * :sitreps / :n) + 1),
                   {status}, 1, {at}, NULL,
                   CASE WHEN i % 100 <> 0 AND i <= :pending_from THEN {at} END,
                   CASE WHEN i % 100 = 0 THEN 'smtp: 550 no such user' END
            FROM series"""
    # Each delivery's SITREPs as rows, as ledger.plan_many writes them (migration 0012's statement).
    if engine.dialect.name == "postgresql":
        links = """INSERT INTO delivery_sitrep (sitrep_id, delivery_id)
                   SELECT DISTINCT CAST(e.value AS INTEGER), d.id
                   FROM delivery AS d CROSS JOIN LATERAL json_array_elements_text(d.sitrep_ids) AS e(value)"""
    else:
        links = """INSERT OR IGNORE INTO delivery_sitrep (sitrep_id, delivery_id)
                   SELECT CAST(e.value AS INTEGER), d.id FROM delivery AS d, json_each(d.sitrep_ids) AS e"""
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)
        conn.execute(sa.text(links))


# --- measurements: each returns table rows (what, p50 s, p95 s, note) ---------------------

def _timed(call, repeat: int) -> tuple[float, float]:
    call()  # warm: compiled statements, templates, the page cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times), times[max(0, round(0.95 * len(times)) - 1)]


def _client(url: str, engine):
    from fastapi.testclient import TestClient

    from dispatch.config import Settings
    from dispatch.web import create_app

    settings = Settings(database_url=url, smtp_host="127.0.0.1", smtp_port=9, public_url="http://testserver/",
                        secret_key="bench-secret", mail_from="Bench <bench@example.org>")
    client = TestClient(create_app(settings, engine), base_url="http://testserver")
    client.__enter__()
    html = client.get("/admin/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    signed = client.post("/admin/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": token},
                         follow_redirects=False)
    assert signed.status_code == 303, signed.text[:300]
    return client


def measure_pages(url: str, engine, *, repeat: int, readers: int, deliveries: int, **_) -> list[tuple]:
    client = _client(url, engine)
    with db.session_scope(engine) as session:
        _, token = admins.create_token(session, f"bench {time.time():.0f}")  # one per run: --reuse
    api = {"Authorization": f"Bearer {token}"}
    today = datetime.now(timezone.utc).date()
    oldest = today - timedelta(days=9)
    middle = deliveries // 2
    newest_sitrep = 20
    probe = min(4242, readers)
    pages = [
        ("/admin (dashboard)", "/admin", {}),
        ("/admin/subscribers", "/admin/subscribers", {}),
        ("/admin/subscribers deep page", f"/admin/subscribers?after={readers // 2}", {}),
        (f"/admin/subscribers?q=reader{probe}", f"/admin/subscribers?q=reader{probe}", {}),
        (f"/admin/subscribers?q=Reader {probe} (name prefix)", f"/admin/subscribers?q=Reader%20{probe}", {}),
        # A later word of the name: "Reader 4242" by "4242" (11 readers at 100,000), and by "42" (1,111).
        (f"/admin/subscribers?q={probe} (a later word)", f"/admin/subscribers?q={probe}", {}),
        (f"/admin/subscribers?q={str(probe)[:2]} (a later word, a keystroke)", f"/admin/subscribers?q={str(probe)[:2]}", {}),
        ("/admin/subscribers?status=bounced", "/admin/subscribers?status=bounced", {}),
        ("/admin/subscribers?region=europe-eurasia", "/admin/subscribers?region=europe-eurasia", {}),
        (f"/admin/subscribers/{probe} (+ its deliveries)", f"/admin/subscribers/{probe}", {}),
        ("/admin/deliveries", "/admin/deliveries", {}),
        ("/admin/deliveries deep page", f"/admin/deliveries?after={middle}", {}),
        ("/admin/deliveries?status=failed", "/admin/deliveries?status=failed", {}),
        ("/admin/deliveries?status=failed deep", f"/admin/deliveries?status=failed&after={middle}", {}),
        ("/admin/deliveries?day=today", f"/admin/deliveries?day={today}", {}),
        ("/admin/deliveries?day=9 days ago", f"/admin/deliveries?day={oldest}", {}),
        (f"/admin/deliveries?subscriber={probe}", f"/admin/deliveries?subscriber={probe}", {}),
        ("/admin/deliveries?sitrep=newest", f"/admin/deliveries?sitrep={newest_sitrep}", {}),
        ("/admin/deliveries?sitrep=oldest", "/admin/deliveries?sitrep=1", {}),
        ("/admin/sitreps", "/admin/sitreps", {}),
        ("GET /api/subscribers", "/api/subscribers", api),
        ("GET /api/subscribers?limit=10", "/api/subscribers?limit=10", api),
        ("GET /api/subscribers?limit=1000", "/api/subscribers?limit=1000", api),
        ("GET /api/deliveries", "/api/deliveries", api),
        ("GET /api/deliveries?status=failed", "/api/deliveries?status=failed", api),
        ("GET /api/sitreps", "/api/sitreps", api),
    ]
    rows = []
    for what, path, headers in pages:
        size = len(client.get(path, headers=headers).content)

        def call(path=path, headers=headers):
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
        p50, p95 = _timed(call, repeat)
        rows.append((what, p50, p95, f"{size / 1024:.0f} KB"))
    client.__exit__(None, None, None)
    return rows


def measure_cli_startup(url: str, engine, *, repeat: int, **_) -> list[tuple]:
    """A fresh process per run: what a person waits for at the prompt. The
    minimum is in the note: on a shared machine it is the steadier figure."""
    rows = []
    for what, args in (("dispatch --help", ["--help"]), ("dispatch sitrep list", ["sitrep", "list"])):
        times = []

        def call(args=args):
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "dispatch", "--database-url", url, *args],
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            assert proc.returncode == 0, proc.stderr[-500:]
        p50, p95 = _timed(call, max(repeat, 10))
        rows.append((what, p50, p95, f"new process, min {min(times[1:]) * 1000:.0f} ms"))
    return rows


def measure_import(url: str, engine, *, import_rows: int, **_) -> list[tuple]:
    """`dispatch subscriber import` of a generated CSV into a fresh database,
    in a process of its own: its time and peak RSS. Off unless --import-rows."""
    if not import_rows:
        return []
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "readers.csv"
        with csv_path.open("w") as out:
            out.write("email,name,regions,cadence\n")
            for i in range(import_rows):
                out.write(f"import{i}@example.org,Import {i},{REGIONS[i % len(REGIONS)]},daily\n")
        if url.startswith("postgresql"):  # a database of its own beside the seeded one
            target = sa.engine.make_url(url).set(database=f"{sa.engine.make_url(url).database}_import") \
                .render_as_string(hide_password=False)
            fresh_postgres(target)
        else:
            target = f"sqlite:///{Path(folder) / 'import.db'}"
        subprocess.run([sys.executable, "-m", "dispatch", "--database-url", target, "init"], check=True,
                       capture_output=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dispatch", "--database-url", target, "subscriber", "import",
                               str(csv_path)], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert proc.returncode == 0, proc.stderr[-500:]
    where = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    return [(f"subscriber import of {import_rows:,} rows ({where})", elapsed, elapsed, f"peak RSS {peak_mb:.0f} MB")]


MEASUREMENTS = [measure_pages, measure_cli_startup, measure_import]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20, help="requests per page (after one to warm)")
    parser.add_argument("--database-url", help="PostgreSQL URL of a database to drop and make again")
    parser.add_argument("--import-rows", type=int, default=0, help="also time a CSV import of this many rows")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the --database-url database an earlier run seeded (same sizes), without seeding")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "admin.jsonl"))
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="dispatch-admin-bench-")
    url = args.database_url or f"sqlite:///{folder}/admin.db"
    if args.reuse and not args.database_url:
        parser.error("--reuse needs the --database-url of a database seeded before")
    if args.database_url and not args.reuse:
        fresh_postgres(url)
    engine = db.create_engine(url)
    if args.reuse:
        maintain(engine)
        seeded = {"reused": True}
    else:
        seeded = seed(engine, readers=args.readers, deliveries=args.deliveries, rng=random.Random(14))
    print(f"seeded {args.readers:,} readers and {args.deliveries:,} deliveries on {engine.dialect.name} "
          f"in {seeded.get('seed_total_s', '(reused)')} s", flush=True)
    rows = []
    for measure in MEASUREMENTS:
        rows += measure(url, engine, repeat=args.repeat, readers=args.readers, deliveries=args.deliveries,
                        import_rows=args.import_rows)
    print("\n| what | p50 | p95 | note |\n| --- | --- | --- | --- |")
    for what, p50, p95, note in rows:
        flag = "" if p95 <= TARGET_SECONDS or "dispatch" in what else " ⚠"
        print(f"| {what} | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms{flag} | {note} |")
    with open(args.out, "a") as out:
        out.write(json.dumps({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "database": engine.dialect.name, "readers": args.readers,
                              "deliveries": args.deliveries, "python": platform.python_version(), **seeded,
                              "load_average_after": round(os.getloadavg()[0], 1),
                              "rows": [{"what": w, "p50_s": round(a, 4), "p95_s": round(b, 4), "note": n}
                                       for w, a, b, n in rows]}) + "\n")
    engine.dispose()


if __name__ == "__main__":
    main()
