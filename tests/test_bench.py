"""The fan-out benchmark still runs end to end and writes its results line.
A smoke test on a tiny list: no figure is judged here (timings belong to the
benchmark itself), only that every stage ran and reported."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

pytestmark = pytest.mark.skipif(
    not Path(SMTP_SINK).exists(),
    reason="needs Postfix's smtp-sink (apt-get install postfix; .ci/run installs it)")


def test_fanout_benchmark_runs_every_stage_on_a_small_list(tmp_path):
    out = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fanout.py"), "--subscribers", "120",
                           "--sitreps", "4", "--ledger-rows", "2000", "--out", str(out),
                           "--min-sink-rate", "0"],  # a busy test machine must not fail the sink check
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout and "idle planning tick" in proc.stdout
    (result,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["subscribers"] == 120 and result["ledger_rows"] == 2000
    # Every planned delivery went out (the sinks accept all), and the baseline
    # sent messages of the pipeline's own sizes.
    assert result["outcomes"] == {"sent": result["delivered"]} and result["delivered"] > 50
    assert result["wire_msgs_per_s"] > 0 and result["pipeline_msgs_per_s"] > 0
    assert 2_000 < result["message_bytes"] < 200_000
