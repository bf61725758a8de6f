"""`dispatch sink` as a real process: a port that is taken is one line and
exit 2, not a traceback."""

import socket
import subprocess
import sys

import pytest


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("which, what", [("--smtp-port", "SMTP sink"), ("--slack-port", "Slack sink")])
def test_a_busy_port_is_one_line_and_exit_2(tmp_path, taken_port, which, what):
    ports = {"--smtp-port": _free_port(), "--slack-port": _free_port(), which: taken_port}
    args = [item for pair in ports.items() for item in (pair[0], str(pair[1]))]
    done = subprocess.run([sys.executable, "-m", "dispatch", "sink", "--folder", str(tmp_path / "sink"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line == f"error: the {what} cannot listen on 127.0.0.1:{taken_port}: the port is already in use " \
                   "(another sink, or another program)"
