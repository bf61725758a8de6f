"""Admin at scale: a big CSV import and the CLI's start-up (issue 14).

    python bench/import_cli.py --rows 100000 [--database-url postgresql://postgres@127.0.0.1:5432/NAME]

Writes a CSV of ``--rows`` readers (a tenth pending or unsubscribed, a few
regions each), imports it with `dispatch subscriber import` into a fresh
database (SQLite in a temporary folder, or the PostgreSQL database named,
dropped and made again) under /usr/bin/time (wall time and peak RSS of the
whole command), exports it again, and times `dispatch --help` and
`dispatch sitrep list` (minimum and median of ``--repeat`` runs, each a new
process: on a shared machine the minimum is the steadier figure).
Targets: import ≤ 15 s and ≤ 250 MB; --help ≤ 0.4 s; sitrep list ≤ 0.8 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REGIONS = ["americas", "europe-eurasia", "global", "east-asia-pacific", "sub-saharan-africa"]
HEADER = ["email", "name", "regions", "analysts", "cadence", "at", "tz", "weekday", "format", "status", "kind"]


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(14)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(rows):
            writer.writerow([
                f"reader{n}@example.org", f"Reader {n}", ";".join(rng.sample(REGIONS, rng.randint(0, 2))), "",
                rng.choice(["daily", "weekly", "immediate"]), f"{rng.randint(5, 9):02d}:{rng.choice(['00', '30'])}",
                rng.choice(["UTC", "Europe/London", "America/New_York", "Asia/Tokyo"]), "mon",
                rng.choice(["html", "text"]), rng.choice(["active"] * 8 + ["pending", "unsubscribed"]), "email"])


def dispatch(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True)


def timed_v(args: list[str], *, cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one command, from GNU time -v."""
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "dispatch", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss_kb / 1024


def start_up(args: list[str], *, cwd: Path, env: dict, repeat: int) -> tuple[float, float]:
    """(minimum, median) wall seconds of ``repeat`` new processes."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        dispatch(*args, cwd=cwd, env=env)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", help="PostgreSQL URL of a database to drop and make again")
    parser.add_argument("--out", type=Path, help="append the figures as one JSON line")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as folder:
        where = Path(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
        env["DISPATCH_DATABASE_URL"] = options.database_url or f"sqlite:///{where / 'bench.db'}"
        if options.database_url:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from fanout import fresh_postgres

            fresh_postgres(options.database_url)
        source = where / "list.csv"
        write_csv(source, options.rows)
        dispatch("init", cwd=where, env=env)
        import_s, import_mb = timed_v(["subscriber", "import", str(source)], cwd=where, env=env)
        export_s, export_mb = timed_v(["subscriber", "export", str(where / "out.csv")], cwd=where, env=env)
        help_min, help_s = start_up(["--help"], cwd=where, env=env, repeat=options.repeat)
        list_min, list_s = start_up(["sitrep", "list"], cwd=where, env=env, repeat=options.repeat)
    database = "postgresql" if options.database_url else "sqlite"
    result = {"rows": options.rows, "database": database, "import_s": round(import_s, 2),
              "import_peak_rss_mb": round(import_mb), "export_s": round(export_s, 2),
              "export_peak_rss_mb": round(export_mb), "help_s": round(help_s, 3), "help_min_s": round(help_min, 3),
              "sitrep_list_s": round(list_s, 3), "sitrep_list_min_s": round(list_min, 3),
              "load_average": round(os.getloadavg()[0], 1)}
    print(f"| import {options.rows:,} rows ({database}) | {import_s:.1f} s, {import_mb:.0f} MB peak RSS | ≤ 15 s, ≤ 250 MB |")
    print(f"| export {options.rows:,} rows | {export_s:.1f} s, {export_mb:.0f} MB peak RSS | constant memory |")
    print(f"| dispatch --help | min {help_min:.2f} s, median {help_s:.2f} s of {options.repeat} | ≤ 0.4 s |")
    print(f"| dispatch sitrep list | min {list_min:.2f} s, median {list_s:.2f} s of {options.repeat} | ≤ 0.8 s |")
    if options.out:
        with options.out.open("a", encoding="utf-8") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
