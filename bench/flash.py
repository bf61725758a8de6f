#!/usr/bin/env python3
"""The FLASH benchmark: how long does fanning one FLASH out to every reader
take, and what does leaving it out of their digests add to planning?

    python bench/flash.py --subscribers 100000 [--database-url URL] [--out bench/results.jsonl]

It seeds a fresh database as bench/fanout.py does (N daily readers with
random regions and analysts, a few Slack channels), approves one SITREP as
a FLASH, and times, in this process:
  1. ``planner.plan_flash``: the fan-out into the ledger (one delivery per
     matching reader);
  2. ``planner.plan_flash`` again: the idle check `dispatch run` makes every
     send interval;
  3. ``planner.plan_due`` after every reader's window has ended: the digests,
     each of which must leave the FLASH out (so it plans no delivery for a
     reader who had it in the FLASH).
Nothing is sent: the sending side is the same as every digest's (fanout.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
import fanout  # noqa: E402  (the seeding is the fan-out benchmark's own)

from dispatch import db, planner, sitreps  # noqa: E402
from dispatch.models import Delivery  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--database-url", help="default: a new SQLite file in a temporary folder; a "
                                               "PostgreSQL URL is emptied first")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.jsonl")))
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="dispatch-flash-")
    url = args.database_url or f"sqlite:///{folder}/bench.db"
    if url.startswith("postgresql"):
        fanout.fresh_postgres(url)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    # One SITREP (its analysts are the ones readers may follow), approved the usual way by the seeding:
    fanout.seed(url, subscribers=args.subscribers, sitrep_count=1, slack_url="C0BENCH", rng=rng)
    seeded = time.perf_counter() - started
    engine = db.create_engine(url)
    with db.session_scope(engine) as session:  # … and approved again, as a FLASH
        (sitrep,) = sitreps.list_sitreps(session)
        sitreps.withdraw_sitrep(session, sitrep.id, by="bench")
        sitreps.approve_sitrep(session, sitrep.id, by="chief", at=fanout.APPROVED, flash=True)

    def timed(call):
        began = time.perf_counter()
        report = call()
        return time.perf_counter() - began, report

    fan_seconds, fanned = timed(lambda: planner.plan_flash(engine, now=fanout.APPROVED + timedelta(seconds=2)))
    idle_seconds, idle = timed(lambda: planner.plan_flash(engine, now=fanout.APPROVED + timedelta(seconds=4)))
    digest_seconds, digests = timed(lambda: planner.plan_due(engine, now=fanout.RUN_AT))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(Delivery)).scalar()
    engine.dispose()
    assert idle.deliveries_planned == 0 and digests.deliveries_planned == 0, "a digest repeated the FLASH"
    result = {
        "bench": "flash", "backend": engine.dialect.name, "subscribers": args.subscribers,
        "flash_deliveries": fanned.deliveries_planned, "flash_seconds": round(fan_seconds, 3),
        "flash_per_second": round(fanned.deliveries_planned / fan_seconds) if fan_seconds else None,
        "idle_check_seconds": round(idle_seconds, 4), "digest_plan_seconds": round(digest_seconds, 3),
        "digests_checked": digests.subscribers_checked, "ledger_rows": rows, "seed_seconds": round(seeded, 1),
        "python": platform.python_version(), "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    with open(args.out, "a", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
