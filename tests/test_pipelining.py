"""Against Postfix's smtp-sink, which offers PIPELINING (aiosmtpd does not):
MAIL, RCPT and DATA go in one write and messages arrive intact."""

import email
import email.policy
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dispatch.adapters.smtp import SmtpAdapter

from .test_smtp_adapter import DOTTY

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
pytestmark = pytest.mark.skipif(
    not Path(SMTP_SINK).exists(),
    reason="needs Postfix's smtp-sink (apt-get install postfix; .ci/run installs it)")


@pytest.fixture
def smtp_sink():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # smtp-sink drops to user nobody, who must be able to write the dumps.
    dumps = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
    dumps.chmod(0o777)
    proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-d", f"{dumps}/%M.", "-4", f"127.0.0.1:{port}", "10"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, dumps
    proc.terminate()
    proc.wait()
    shutil.rmtree(dumps, ignore_errors=True)


def test_pipelined_messages_arrive_intact(smtp_sink):
    port, dumps = smtp_sink
    adapter = SmtpAdapter(host="127.0.0.1", port=port, mail_from="news@example.org", timeout=5)
    conn = adapter._acquire()
    assert conn.smtp.has_extn("pipelining")
    adapter._release(conn)
    for n in range(1, 6):
        adapter.send(f"r{n}@example.org", DOTTY, delivery_id=n)
    adapter.close()
    time.sleep(0.3)
    files = sorted(dumps.rglob("*"))
    messages = []
    for path in (p for p in files if p.is_file()):
        # smtp-sink writes the envelope as X- lines before the message.
        raw = path.read_bytes()
        messages.append(email.message_from_bytes(raw[raw.index(b"From: "):], policy=email.policy.default))
    assert sorted(m["Message-ID"] for m in messages) == [f"<delivery-{n}@example.org>" for n in range(1, 6)]
    for m in messages:
        assert m.get_payload()[0].get_content().replace("\r\n", "\n") == DOTTY.text
