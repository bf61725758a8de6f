#!/usr/bin/env python3
"""How sending grows with processes on PostgreSQL.

    python bench/scale_out.py --subscribers 10000 --processes 1 2 4 [--database-url URL]

For each process count: a fresh database with the benchmark's subscribers,
one `dispatch run --once --role planner` to plan, then that many
`dispatch run --once --role sender` processes at once against Postfix's
smtp-sink. Prints deliveries per second for each count.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import fanout  # noqa: E402  (the same seeding and sink as the fan-out benchmark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--sitreps", type=int, default=20)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/dispatch_bench")
    args = parser.parse_args()
    sink, port = fanout.start_sink()
    try:
        for count in args.processes:
            fanout.fresh_postgres(args.database_url)
            fanout.seed(args.database_url, subscribers=args.subscribers, sitrep_count=args.sitreps,
                        slack_url="http://127.0.0.1:9/webhook/", rng=random.Random(1))
            env = {**os.environ, "DISPATCH_DATABASE_URL": args.database_url, "DISPATCH_SMTP_HOST": "127.0.0.1",
                   "DISPATCH_SMTP_PORT": str(port), "DISPATCH_MAIL_FROM": "news@example.org",
                   "DISPATCH_SECRET_KEY": "bench", "DISPATCH_SENDER_THREADS": "2", "DISPATCH_BATCH_SIZE": "200",
                   "DISPATCH_MAX_ATTEMPTS": "1", "DISPATCH_SLACK_WEBHOOK_HOSTS": "127.0.0.1"}
            command = [sys.executable, "-m", "dispatch", "run", "--once", "--json", "--now", fanout.RUN_AT.isoformat()]
            subprocess.run([*command, "--role", "planner"], env=env, check=False, capture_output=True)
            started = time.perf_counter()
            procs = [subprocess.Popen([*command, "--role", "sender"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(count)]
            for proc in procs:
                proc.wait()
            elapsed = time.perf_counter() - started
            import sqlalchemy as sa
            from dispatch import db
            engine = db.create_engine(args.database_url)
            with engine.connect() as conn:
                sent = conn.execute(sa.text("SELECT count(*) FROM delivery WHERE status = 'sent'")).scalar()
            engine.dispose()
            print(f"{count} sender process(es): {sent:,} sent in {elapsed:.1f} s = {sent / elapsed:,.0f}/s", flush=True)
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
