"""`dispatch subscriber export FILE` writes a file only its owner can read:
it holds readers' addresses and Slack webhook URLs (each a credential)."""

from __future__ import annotations

import os
import stat


def test_the_export_file_is_created_0600_whatever_the_umask(run, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("email,kind\nhttps://hooks.slack.com/services/T0/B0/secretpart,slack\na@example.org,email\n")
    assert run("subscriber", "import", source).exit_code == 0
    out = tmp_path / "out.csv"
    old = os.umask(0o022)
    try:
        assert run("subscriber", "export", out).exit_code == 0
        (tmp_path / ".again.csv.partial").write_text("left over")
        os.chmod(tmp_path / ".again.csv.partial", 0o644)
        assert run("subscriber", "export", tmp_path / "again.csv").exit_code == 0
    finally:
        os.umask(old)
    assert "secretpart" in out.read_text()
    for path in (out, tmp_path / "again.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
