"""bench/import_cli.py still runs end to end (a smoke test on a tiny list:
figures are the benchmark's business, not judged here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_cli_benchmark_runs(tmp_path):
    out = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "import_cli.py"), "--rows", "50", "--repeat", "1",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "import 50 rows" in proc.stdout and "dispatch --help" in proc.stdout
    (result,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["rows"] == 50 and result["import_s"] > 0 and result["help_s"] > 0
