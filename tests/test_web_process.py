"""`dispatch web` and `dispatch run --web` as real processes: they serve,
and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from dispatch.sink import _free_port


def wait_for(url: str, child: subprocess.Popen | None = None, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise AssertionError(f"the process exited: {child.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@pytest.mark.parametrize("command", [["web"], ["run", "--web"]])
def test_the_web_server_runs_as_a_process_and_stops_on_sigterm(tmp_path, mail_sink, command):
    port = _free_port("127.0.0.1")
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}",
           "DISPATCH_SMTP_HOST": mail_sink.host, "DISPATCH_SMTP_PORT": str(mail_sink.port)}
    child = subprocess.Popen([sys.executable, "-m", "dispatch", *command, "--port", str(port)], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Subscribe to" in wait_for(f"http://127.0.0.1:{port}/subscribe", child)
        assert "Sign in" in wait_for(f"http://127.0.0.1:{port}/admin/login", child)
    finally:
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=30)
        log = child.stderr.read()
    # Uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert code in (0, -signal.SIGTERM), log
    assert "Traceback" not in log
    if command == ["web"]:
        assert "Application shutdown complete" in log


def test_web_and_once_do_not_go_together(tmp_path):
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}"}
    done = subprocess.run([sys.executable, "-m", "dispatch", "run", "--once", "--web"], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--web" in done.stderr


def test_a_slow_mail_server_holds_up_no_request(tmp_path):
    """Confirmation emails are planned into the ledger and sent by the notice
    sender: with a relay that takes a second a message, sign-ups answer at
    once, concurrent ones too, and so does every other page."""
    import threading

    import uvicorn

    from dispatch import bootstrap, db
    from dispatch.web import create_app
    from tests.servers import scripted_smtp
    from tests.webtools import csrf_from, settings_for

    smtp, handler = scripted_smtp(tmp_path / "mail")
    handler.delay = 1.0
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    engine = db.create_engine(url)
    bootstrap.init_database(engine)
    port = _free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(create_app(settings_for(url, smtp), engine), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        import httpx2  # the HTTP client the test extras bring (starlette's test client uses it)

        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/subscribe")
        answers: list[tuple[int, float]] = []

        def sign_up(n: int) -> None:
            with httpx2.Client(base_url=base) as reader:
                csrf = csrf_from(reader.get("/subscribe").text)
                started = time.monotonic()
                status = reader.post("/subscribe", data={"email": f"reader{n}@example.org", "csrf_token": csrf},
                                     timeout=30).status_code
                answers.append((status, time.monotonic() - started))

        signups = [threading.Thread(target=sign_up, args=(n,)) for n in range(5)]
        for t in signups:
            t.start()
        with httpx2.Client(base_url=base) as admin:
            started = time.monotonic()
            assert admin.get("/admin/login", timeout=10).status_code == 200
            assert time.monotonic() - started < 1.0
        for t in signups:
            t.join()
        assert [status for status, _ in answers] == [200] * 5
        assert max(seconds for _, seconds in answers) < 1.0, answers
        deadline = time.monotonic() + 20  # five messages at a second each, sent in the background
        while len(list((tmp_path / "mail").glob("*.eml"))) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list((tmp_path / "mail").glob("*.eml"))) == 5
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        smtp.stop()
        engine.dispose()


@pytest.fixture
def web_process(tmp_path, mail_sink):
    """`dispatch web` as a real process on loopback: (base URL, process)."""
    port = _free_port("127.0.0.1")
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}",
           "DISPATCH_SMTP_HOST": mail_sink.host, "DISPATCH_SMTP_PORT": str(mail_sink.port)}
    child = subprocess.Popen([sys.executable, "-m", "dispatch", "web", "--port", str(port)], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/subscribe", child)
        yield base, port
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)


def test_a_chunked_body_is_cut_off_at_the_limit_while_it_streams(web_process):
    """No Content-Length: the cap holds on the chunks as they arrive, and
    the server answers 413 long before the client is done sending."""
    import socket

    from dispatch.web.app import DEFAULT_BODY_BYTES

    _, port = web_process
    chunk = b"a" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        try:
            while sent < 200 * 1024 * 1024:  # far more than any limit; the server stops it long before
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                sock.settimeout(0.0)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the server has answered
                except BlockingIOError:
                    pass
                finally:
                    sock.settimeout(10)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 40 * DEFAULT_BODY_BYTES + 8 * 1024 * 1024  # cut off early, not read to the end


def test_x_forwarded_for_from_a_loopback_peer_is_not_believed(web_process):
    """uvicorn would trust forwarded headers from 127.0.0.1; dispatch only
    from DISPATCH_TRUSTED_PROXIES (none here), so a claimed address per
    request gets no new allowance of sign-ups."""
    import httpx2

    from tests.webtools import csrf_from

    base, _ = web_process
    codes = []
    with httpx2.Client(base_url=base) as client:
        for n in range(12):
            csrf = csrf_from(client.get("/subscribe").text)
            codes.append(client.post("/subscribe", data={"email": f"r{n}@example.org", "csrf_token": csrf},
                                     headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code)
    assert codes[:10] == [200] * 10 and codes[10:] == [429, 429]


def test_a_burst_of_concurrent_guesses_gets_no_more_checks_than_the_limit(web_process, tmp_path):
    """Each attempt is counted before its password is checked, and the checks
    run outside any transaction and a few at a time: 30 guesses at once get 5
    checks, and the other pages keep answering."""
    import threading

    import httpx2

    from tests.webtools import csrf_from

    base, _ = web_process
    env = {**os.environ, "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}"}
    subprocess.run([sys.executable, "-m", "dispatch", "admin", "create", "boss", "--password-stdin"], env=env,
                   cwd=tmp_path, input="a long and proper passphrase\n", text=True, check=True, capture_output=True)
    clients = [httpx2.Client(base_url=base) for _ in range(30)]
    tokens = [csrf_from(c.get("/admin/login").text) for c in clients]
    codes: list[int] = []
    start = threading.Barrier(len(clients) + 1)

    def guess(client, token, n):
        start.wait()
        codes.append(client.post("/admin/login", data={"username": "boss", "password": f"guess number {n}",
                                                        "csrf_token": token}, timeout=60).status_code)

    threads = [threading.Thread(target=guess, args=(c, t, n)) for n, (c, t) in enumerate(zip(clients, tokens))]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(0.2)
    with httpx2.Client(base_url=base) as other:
        began = time.monotonic()
        assert other.get("/subscribe", timeout=30).status_code == 200
        waited = time.monotonic() - began
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert codes.count(401) == 5 and codes.count(429) == 25, codes
    assert waited < 2.0
