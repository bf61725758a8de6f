"""Posts to URLs someone typed (event webhooks, Slack webhooks): one total
deadline however slowly the server drips its answer, a bounded answer,
leases that outlive a slow post, and no private, loopback or metadata
address unless the operator lists its network (checked on the address
connected to, so DNS rebinding reaches nothing)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from datetime import timedelta

import pytest
from pydantic import ValidationError

from dispatch import db, outbound
from dispatch.adapters.slack import SlackAdapter
from dispatch.config import Settings
from dispatch.errors import FieldError, PermanentError, TransientError
from dispatch.events import emit, endpoints, sender as event_sender
from dispatch.models import DeliveryStatus, EventWebhook
from dispatch.render_slack import SlackContent, SlackMessage
from dispatch.retry import RetryPolicy

from .test_event_webhooks import LOOPBACK, Receiver, event_rows

DRIP_SECONDS = 30  # how long the slow server would go on


class DripServer:
    """Reads a request, then answers one byte every ``pause`` seconds for
    DRIP_SECONDS: each read gets a byte long before any per-read timeout."""

    def __init__(self, answer: bytes = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000, pause: float = 0.2,
                 tls: ssl.SSLContext | None = None):
        self.tls = tls
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.answer, self.pause = answer, pause
        self.cut = threading.Event()  # the client went away before the answer ended
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        if self.tls is not None:
            conn.settimeout(10)
            conn = self.tls.wrap_socket(conn, server_side=True)
        conn.recv(65536)
        end = time.monotonic() + DRIP_SECONDS
        try:
            for byte in self.answer:
                if time.monotonic() > end:
                    break
                conn.send(bytes([byte]))
                time.sleep(self.pause)
        except OSError:
            self.cut.set()
        finally:
            conn.close()

    def stop(self):
        self.sock.close()


@pytest.fixture
def drip():
    server = DripServer()
    yield server
    server.stop()


def test_a_dripping_answer_is_cut_off_at_the_total_deadline(drip):
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        outbound.post(drip.url, b"{}", {}, timeout=1.0, allowed=outbound.networks(LOOPBACK))
    # Far below what the server would take (a per-read timeout never fires: a byte comes every 0.2 s).
    assert time.monotonic() - started < DRIP_SECONDS / 3
    assert drip.cut.wait(5), "the connection was left open"


def test_a_dripping_event_endpoint_is_retried_not_waited_for(engine, drip):
    with db.session_scope(engine) as session:
        endpoints.add(session, drip.url, events=["subscriber.created"], private_networks=LOOPBACK)
        emit.emit(session, "subscriber.created", {"id": 1})
    sender = event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=3), timeout=1.0,
                                      private_networks=LOOPBACK)
    started = time.monotonic()
    assert sender.drain() == 1
    assert time.monotonic() - started < DRIP_SECONDS / 3
    (row,) = event_rows(engine)
    assert row.status == DeliveryStatus.pending and row.last_error.startswith("no answer")


def test_a_dripping_slack_webhook_is_a_transient_error(drip):
    adapter = SlackAdapter(token=None, base_url="http://127.0.0.1:9/api/", min_interval=0, timeout=1,
                           webhook_hosts=("127.0.0.1",), private_networks=LOOPBACK)
    started = time.monotonic()
    with pytest.raises(TransientError, match="no answer in time"):
        adapter.send(drip.url, SlackContent(messages=(SlackMessage(text="hi", blocks=()),)), delivery_id=1)
    assert time.monotonic() - started < DRIP_SECONDS / 3


def test_the_answer_read_is_bounded():
    big = DripServer(answer=b"HTTP/1.1 400 Bad\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 100_000, pause=0)
    try:
        answer = outbound.post(big.url, b"{}", {}, timeout=5, allowed=outbound.networks(LOOPBACK), max_answer=100)
    finally:
        big.stop()
    assert answer.status == 400 and len(answer.body) == 100


def test_an_event_claim_fits_in_its_lease_at_the_deadline_each():
    # At most what is posted in half a lease if every post runs to its deadline.
    slow = event_sender.EventSender(None, policy=RetryPolicy(max_attempts=3), timeout=30,
                                    lease=timedelta(minutes=2))
    assert slow.batch == 2
    assert event_sender.EventSender(None, policy=RetryPolicy(max_attempts=3)).batch * 5 <= 60


def test_a_slow_endpoint_keeps_its_lease_so_no_second_sender_posts_it(engine):
    receiver = Receiver()
    receiver.hold.set()
    try:
        with db.session_scope(engine) as session:
            endpoints.add(session, receiver.url, events=["subscriber.created"], private_networks=LOOPBACK)
            emit.emit(session, "subscriber.created", {"id": 1})
        lease = timedelta(seconds=1)
        first = event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=3), timeout=10, lease=lease,
                                         private_networks=LOOPBACK)
        second = event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=3), timeout=10, lease=lease,
                                          private_networks=LOOPBACK)
        keeper = first.keeper()
        keeper.every = 0.2
        with keeper:
            worker = threading.Thread(target=first.drain, kwargs={"keeper": keeper})
            worker.start()
            assert receiver.held.wait(10)
            time.sleep(3 * lease.total_seconds())  # the claim's first lease ran out long ago
            assert second.drain() == 0  # renewed: nothing to take over
            receiver.release.set()
            worker.join(15)
        assert len(receiver.posts) == 1
        (row,) = event_rows(engine)
        assert row.status == DeliveryStatus.sent
    finally:
        receiver.stop()


REFUSED = ["http://127.0.0.1:8080/x", "http://localhost/x", "https://169.254.169.254/latest/meta-data/",
           "https://10.0.0.5/x", "https://192.168.1.1/x", "https://172.16.0.1/x", "https://100.64.0.1/x",
           "https://0.0.0.0/x", "https://[::1]/x", "https://[fd00::1]/x", "https://[fe80::1]/x",
           "https://[::ffff:169.254.169.254]/x", "https://[2002:a9fe:a9fe::]/x", "https://[64:ff9b::a00:1]/x",
           "https://224.0.0.1/x"]


@pytest.mark.parametrize("url", REFUSED)
def test_private_loopback_and_metadata_addresses_are_refused_when_stored(engine, url):
    with db.session_scope(engine) as session, pytest.raises(FieldError, match="DISPATCH_OUTBOUND_PRIVATE_NETWORKS"):
        endpoints.add(session, url, events=["subscriber.created"])


def test_a_listed_network_is_the_explicit_opt_in(engine):
    with db.session_scope(engine) as session:
        endpoints.add(session, "https://10.1.2.3/x", events=["subscriber.created"], private_networks=("10.1.2.0/24",))
        with pytest.raises(FieldError):
            endpoints.add(session, "https://10.1.3.3/x", events=["subscriber.created"],
                          private_networks=("10.1.2.0/24",))
    assert outbound.address_problem(ipaddress.ip_address("8.8.8.8")) is None


def _stored(engine, url: str) -> None:
    """A webhook stored before the rule (or under another setting): no check on the way in."""
    with db.session_scope(engine) as session:
        session.add(EventWebhook(url=url, secret="whsec_" + "A" * 32, events=["subscriber.created"]))
        session.flush()
        emit.emit(session, "subscriber.created", {"id": 1})


def test_a_stored_loopback_webhook_is_refused_at_send_time(engine):
    receiver = Receiver()
    try:
        _stored(engine, receiver.url)
        assert event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=3)).drain() == 1
        (row,) = event_rows(engine)
        assert row.status == DeliveryStatus.failed and "loopback" in row.last_error
        assert receiver.posts == []
    finally:
        receiver.stop()


@pytest.fixture
def rebinding(monkeypatch):
    """A name whose lookups answer what the test says, counting them."""
    answers: list[list[str]] = []
    calls = []
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        ips = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in ips]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers, calls


def test_every_address_a_name_resolves_to_is_checked(rebinding):
    answers, _ = rebinding
    answers.append(["8.8.8.8", "127.0.0.1"])
    with pytest.raises(outbound.AddressRefused, match="rebind.example resolves to 127.0.0.1"):
        outbound.post("http://rebind.example/x", b"{}", {}, timeout=2)


def test_the_connection_goes_to_the_checked_address_resolved_once(rebinding):
    answers, calls = rebinding
    receiver = Receiver()
    try:
        port = receiver.server.server_port
        # First lookup: loopback (allowed here); any later one would say the metadata address.
        answers.extend([["127.0.0.1"], ["169.254.169.254"]])
        answer = outbound.post(f"http://rebind.example:{port}/hooks", b"{}", {}, timeout=5,
                               allowed=outbound.networks(LOOPBACK))
        assert answer.status == 200 and len(calls) == 1
        headers, _ = receiver.posts[0]
        assert headers["host"] == f"rebind.example:{port}"  # the name, for virtual hosts and TLS
    finally:
        receiver.stop()


def test_a_slack_webhook_to_a_loopback_host_needs_the_opt_in_too():
    receiver = Receiver()
    try:
        adapter = SlackAdapter(token=None, base_url="http://127.0.0.1:9/api/", min_interval=0,
                               webhook_hosts=("127.0.0.1",))
        with pytest.raises(PermanentError, match="loopback"):
            adapter.send(receiver.url, SlackContent(messages=(SlackMessage(text="hi", blocks=()),)), delivery_id=1)
        assert receiver.posts == []
    finally:
        receiver.stop()


def test_the_setting_takes_networks_only(monkeypatch):
    monkeypatch.setenv("DISPATCH_OUTBOUND_PRIVATE_NETWORKS", " 127.0.0.1/32, 10.1.2.0/24 ,")
    assert Settings().outbound_private_networks == ("127.0.0.1/32", "10.1.2.0/24")
    assert Settings.model_fields["outbound_private_networks"].default == ()
    monkeypatch.setenv("DISPATCH_OUTBOUND_PRIVATE_NETWORKS", "intranet.example")
    with pytest.raises(ValidationError, match="outbound_private_networks"):
        Settings()


def test_an_event_post_logs_the_receivers_origin_never_its_path(engine, caplog):
    receiver = Receiver()
    try:
        url = receiver.url.replace("/hooks/dispatch", "/hooks/catch/4711/plainkey")
        with db.session_scope(engine) as session:
            endpoints.add(session, url, events=["subscriber.created"], private_networks=LOOPBACK)
            emit.emit(session, "subscriber.created", {"id": 1})
        with caplog.at_level("INFO", logger="dispatch.events"):
            assert event_sender.EventSender(engine, policy=RetryPolicy(max_attempts=3),
                                            private_networks=LOOPBACK).drain() == 1
        (record,) = [r for r in caplog.records if r.name == "dispatch.events"]
        assert "plainkey" not in record.getMessage() and "4711" not in str(record.fields)
        assert f"http://127.0.0.1:{receiver.server.server_port}/…" in record.getMessage()
    finally:
        receiver.stop()


def test_https_to_the_checked_address_verifies_the_name_and_keeps_the_deadline(tmp_path):
    from .servers import tls_files

    server_context, ca_file = tls_files(tmp_path)
    receiver = Receiver()
    receiver.server.socket = server_context.wrap_socket(receiver.server.socket, server_side=True)
    try:
        url = f"https://localhost:{receiver.server.server_port}/hooks"
        client = ssl.create_default_context(cafile=str(ca_file))
        allowed = outbound.networks(LOOPBACK + ("::1/128",))
        assert outbound.post(url, b"{}", {}, timeout=5, allowed=allowed, context=client).status == 200
        assert receiver.posts[0][0]["host"] == f"localhost:{receiver.server.server_port}"
        # Without the CA the certificate is not trusted: no post.
        with pytest.raises(ssl.SSLError):
            outbound.post(url, b"{}", {}, timeout=5, allowed=allowed)
        assert len(receiver.posts) == 1
    finally:
        receiver.stop()


def test_a_dripping_https_answer_is_cut_off_too(tmp_path):
    from .servers import tls_files

    server_context, ca_file = tls_files(tmp_path)
    drip = DripServer(tls=server_context)
    try:
        client = ssl.create_default_context(cafile=str(ca_file))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            outbound.post(drip.url.replace("http://127.0.0.1", "https://localhost"), b"{}", {}, timeout=1.5,
                          allowed=outbound.networks(LOOPBACK + ("::1/128",)), context=client)
        assert time.monotonic() - started < DRIP_SECONDS / 3
    finally:
        drip.stop()


def test_a_listed_private_slack_host_without_the_opt_in_is_warned_about():
    warned = Settings(slack_webhook_hosts=("127.0.0.1", "hooks.example.org")).warnings()
    assert any("127.0.0.1" in w and "DISPATCH_OUTBOUND_PRIVATE_NETWORKS" in w for w in warned)
    assert not [w for w in Settings(slack_webhook_hosts=("127.0.0.1",),
                                    outbound_private_networks=("127.0.0.1/32",)).warnings() if "SLACK" in w]


def test_the_sns_certificate_fetch_is_cut_off_at_its_deadline_however_slowly_it_drips(tmp_path):
    from dispatch.inbound.providers import sns_certs

    from .servers import tls_files

    server_context, ca_file = tls_files(tmp_path)
    drip = DripServer(tls=server_context)
    try:
        fetcher = sns_certs.HttpsFetcher(context=ssl.create_default_context(cafile=str(ca_file)),
                                         allowed=LOOPBACK + ("::1/128",))
        started = time.monotonic()
        with pytest.raises(sns_certs.FetchError, match="longer than"):
            fetcher(drip.url.replace("http://127.0.0.1", "https://localhost") + ".pem", max_bytes=1000,
                    timeout=1.5)
        assert time.monotonic() - started < DRIP_SECONDS / 3
    finally:
        drip.stop()
