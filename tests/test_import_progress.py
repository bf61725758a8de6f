"""`dispatch subscriber import` shows a progress bar on a terminal, and
nothing of it when its output is not one (issue 14)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

CSV = "email,name\n" + "".join(f"r{n}@example.org,R {n}\n" for n in range(1200))


def _dispatch(args, *, tty: bool, cwd) -> str:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    cmd = [sys.executable, "-m", "dispatch", *args]
    if not tty:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
        return done.stdout + done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, cwd=cwd, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode("utf-8", "replace"))  # no colours


def test_progress_bar_on_a_terminal_only(tmp_path):
    source = tmp_path / "list.csv"
    source.write_text(CSV)
    url = ["--database-url", f"sqlite:///{tmp_path / 'd.db'}"]
    assert "schema" in _dispatch([*url, "init"], tty=False, cwd=tmp_path)
    shown = _dispatch([*url, "subscriber", "import", source], tty=True, cwd=tmp_path)
    assert "1200 added" in shown
    assert "checking rows" in shown and "adding rows" in shown
    again = _dispatch([*url, "subscriber", "import", source], tty=False, cwd=tmp_path)
    assert "0 added, 1200 already there" in again
    assert "checking rows" not in again and "adding rows" not in again
