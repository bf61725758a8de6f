"""`dispatch run --once` in a terminal shows a progress bar. With several
sender processes each hears only its own outcomes, so the bar reads the
ledger: it reaches every delivery of the pass, whoever sent it. Run in a
real pseudo-terminal (rich draws only on one), against a real SMTP server."""

import os
import pty
import re
import subprocess
import sys

from .deliverytools import assert_each_sent_once, seed
from .servers import scripted_smtp
from .test_sender_processes import run_env


def run_in_terminal(command, env, cwd) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, env={**env, "COLUMNS": "120", "TERM": "xterm"}, cwd=cwd,
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_the_bar_counts_what_every_sender_process_sent(engine, database_url, tmp_path):
    readers = 60
    sink, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 0.01  # long enough for the bar to be drawn while sending
    seed(engine, [f"reader{n}@example.org" for n in range(readers)], approved_at=None)
    try:
        code, screen = run_in_terminal([sys.executable, "-m", "dispatch", "run", "--once", "--senders", "2"],
                                       run_env(database_url, sink), tmp_path)
    finally:
        sink.stop()
    assert code == 0, screen[-3000:]
    assert_each_sent_once(engine, handler, readers)
    shown = [(int(done), int(total)) for done, total in re.findall(r"(\d+)/(\d+)", screen)]
    assert shown, screen[-3000:]
    assert max(shown) == (readers, readers)  # the whole pass, not this process's share
    assert all(total == readers for _, total in shown)
