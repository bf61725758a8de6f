"""Cross-message PIPELINING against relays that misbehave: a raw-socket relay
(tests/servers.py RawRelay) gives replies aiosmtpd never would. Whatever the
relay does, every message reaches only the reader whose Message-ID it carries,
and every receipt says what its own message's answer was."""

import re
import sys
from collections import Counter

import pytest

from dispatch.adapters.smtp import Receipt, SmtpAdapter
from dispatch.errors import PermanentError, TransientError
from dispatch.render import EmailContent

from .servers import RawRelay

CONTENT = EmailContent(subject="Ports reopen", text="Ships are moving.\n", html="<p>Ships are moving.</p>",
                       preferences_url="https://x.example/preferences/t", unsubscribe_url="https://x.example/unsubscribe/t")


@pytest.fixture
def relay():
    relay = RawRelay()
    yield relay
    relay.stop()


def adapter_for(relay, **kwargs):
    return SmtpAdapter(host=relay.host, port=relay.port, mail_from="Briefings <news@example.org>", timeout=3, **kwargs)


def each_to_its_own_reader(relay) -> bool:
    """Every message the relay took holds one Message-ID, that of the reader it was addressed to."""
    for recipients, data in relay.messages:
        ids = re.findall(rb"Message-ID: <delivery-(\d+)@", data)
        if len(ids) != 1 or recipients != [f"r{int(ids[0])}@example.org"] or b"MAIL FROM:" in data:
            return False
    return True


# The replies of the second message's transaction (or the first's data
# answer) out of step with its commands. An in-step relay answers MAIL with
# 250, RCPT with 250/251, DATA with 354 and the final dot with 250, or any of
# them with 4xx/5xx; anything else means the replies no longer match the
# commands, and going on (RSET, the next message) would hand one reader's
# commands and data to another reader's transaction.
OUT_OF_STEP = {
    # Four lines too many: with an RSET answered by one of them, the next
    # message's commands meet the three replies they expect while the relay
    # takes them as the body of a message to the reader before.
    "the data answer repeated": ({"END": [b"250 queued\r\n" * 5]}, None),
    "an extra line after the data answer": ({"END": [b"250 queued\r\n250 queued again\r\n"]}, None),
    "a line with no code for the data answer": ({"END": [b"hello there\r\n250 queued\r\n"]}, TransientError),
    "354 before the recipient's answer": ({"RCPT": [RawRelay.DEFAULT["RCPT"], b""],
                                            "DATA": [RawRelay.DEFAULT["DATA"], b"354 go ahead\r\n250 2.1.5 ok\r\n"]},
                                           None),
    # smtplib stops reading a line at 8 KB and says the server answered 500:
    # the rest of the line would be read as the next reply.
    "a reply line too long to read": ({"MAIL": [RawRelay.DEFAULT["MAIL"], b"250 " + b"x" * 9000 + b"\r\n"]},
                                      None),
}


@pytest.mark.parametrize("script, first_error", OUT_OF_STEP.values(), ids=OUT_OF_STEP.keys())
def test_replies_out_of_step_end_the_connection(relay, script, first_error):
    for verb, answers in script.items():
        relay.replies[verb].extend(answers)
    adapter = adapter_for(relay)
    first = adapter.send_later("r1@example.org", CONTENT, delivery_id=1)
    with pytest.raises(TransientError):  # its commands met replies that were not theirs: not sent
        adapter.send_later("r2@example.org", CONTENT, delivery_id=2).result()
    try:
        third = adapter.send("r3@example.org", CONTENT, delivery_id=3)
    except TransientError as exc:
        third = exc
    adapter.close()
    assert each_to_its_own_reader(relay), relay.messages
    assert third == "<delivery-3@example.org>"
    if first_error:
        with pytest.raises(first_error):
            first.result()
    else:
        assert first.result() == "<delivery-1@example.org>"
    assert relay.message_ids()[-1] == "<delivery-3@example.org>"
    assert relay.connections == 2  # the one out of step was given up, not reset and used again


def test_a_connection_reset_before_the_next_message_is_written(relay):
    """The relay accepts the first message (its final dot arrives with the
    second one's commands) and resets the connection: the second message was
    not sent (retry), and the first one's answer is read or lost (retry), never
    an internal error."""
    relay.replies["END"].append(RawRelay.RESET)
    adapter = adapter_for(relay)
    first = adapter.send_later("r1@example.org", CONTENT, delivery_id=1)
    with pytest.raises(TransientError):
        adapter.send_later("r2@example.org", CONTENT, delivery_id=2).result()
    assert relay.reset.wait(5)
    # The relay's 250 went out just before the reset: whether the kernel still
    # hands it over after the RST is a race. Either it was read (accepted), or
    # the answer is lost (retry); never an internal error.
    try:
        outcome = first.result()
    except TransientError as exc:
        assert "lost" in str(exc)
    else:
        assert outcome == "<delivery-1@example.org>"
    assert adapter.send("r3@example.org", CONTENT, delivery_id=3) == "<delivery-3@example.org>"
    adapter.close()
    assert relay.message_ids() == ["<delivery-1@example.org>", "<delivery-3@example.org>"]


def test_a_receipt_seen_settled_gives_its_own_outcome_at_every_step_of_settling(relay):
    """Receipt.result() reads a settled receipt without the connection's lock;
    another thread may be settling it at that moment. At every bytecode step
    of settle(), a receipt that says it is settled must give the final
    outcome (a refusal never read as an acceptance)."""
    adapter = adapter_for(relay)
    refusal = PermanentError("server answered 554 5.7.1 refused")
    receipt = Receipt(adapter, None, "<delivery-1@example.org>")
    seen = []

    def look():
        if receipt.settled:
            try:
                seen.append(receipt.result())
            except PermanentError as exc:
                seen.append(exc)

    def trace(frame, event, arg):
        if frame.f_code is Receipt.settle.__code__:
            frame.f_trace_opcodes = True
            return step
        return None

    def step(frame, event, arg):
        if event == "opcode":
            look()
        return step

    sys.settrace(trace)
    try:
        receipt.settle(refusal)
    finally:
        sys.settrace(None)
    look()
    assert seen and all(s is refusal for s in seen), seen


def test_multi_line_replies_stay_in_step(relay):
    for verb in ("MAIL", "RCPT", "DATA", "END"):
        code = RawRelay.DEFAULT[verb][:3]
        relay.replies[verb].extend([code + b"-first line\r\n" + code + b"-second\r\n" + RawRelay.DEFAULT[verb]] * 3)
    adapter = adapter_for(relay)
    receipts = [adapter.send_later(f"r{n}@example.org", CONTENT, delivery_id=n) for n in (1, 2, 3)]
    assert [r.result() for r in receipts] == [f"<delivery-{n}@example.org>" for n in (1, 2, 3)]
    adapter.close()
    assert each_to_its_own_reader(relay) and len(relay.messages) == 3 and relay.connections == 1


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA", "END"])
def test_a_421_for_the_second_message(relay, verb):
    """The relay closes after a 421 to any of the second message's commands:
    the first message's answer was read before it, the second is not sent
    (or its answer was a 421: retry), the third goes on a new connection."""
    relay.replies[verb].extend([RawRelay.DEFAULT[verb], b"421 4.3.2 shutting down\r\n"])
    adapter = adapter_for(relay)
    first = adapter.send_later("r1@example.org", CONTENT, delivery_id=1)
    with pytest.raises(TransientError):
        adapter.send_later("r2@example.org", CONTENT, delivery_id=2).result()
    assert first.result() == "<delivery-1@example.org>"
    assert adapter.send("r3@example.org", CONTENT, delivery_id=3) == "<delivery-3@example.org>"
    adapter.close()
    assert each_to_its_own_reader(relay) and relay.connections == 2
    assert relay.message_ids()[0] == "<delivery-1@example.org>" and relay.message_ids()[-1] == "<delivery-3@example.org>"


def test_a_relay_that_never_answers_a_message_keeps_the_claims_and_records_no_send(engine, database_url):
    """A pipelined message's answer never comes: the sender waits for it to
    its SMTP timeout (past the lease) when the next message's replies are
    read or when the run is recorded. Its claims stay its own meanwhile (no
    other sender takes them over and sends them again), and what was not
    answered is recorded as a retry, never as sent."""
    from pydantic import SecretStr

    from sqlmodel import select

    from dispatch import db
    from dispatch.config import Settings
    from dispatch.models import DeliveryAttempt, DeliveryStatus
    from dispatch.scheduler import Runner

    from .deliverytools import outcomes, rows, seed
    from .test_leases import run_until

    relay = RawRelay()
    relay.replies["END"].extend([RawRelay.DEFAULT["END"]] * 2 + [RawRelay.HANG])  # the third message hangs
    seed(engine, [f"reader{n}@example.org" for n in range(6)], approved_at=None)
    settings = Settings(database_url=database_url, smtp_host=relay.host, smtp_port=relay.port,
                        mail_from="news@example.org", secret_key=SecretStr("k"), lease_seconds=2,
                        smtp_timeout=4, plan_interval=0.5, sender_threads=1, batch_size=50, smtp_pool_size=1)
    runner = Runner(settings, engine)
    try:
        run_until(runner, lambda: len(outcomes(engine)) >= 6, timeout=40)  # every delivery tried once
    finally:
        runner.close()
        relay.stop()
    with db.session_scope(engine) as session:
        first_outcome = {}  # of each delivery, by its Message-ID
        for a in session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all():
            first_outcome.setdefault(a.delivery_id, a.outcome)
    hung = relay.message_ids()[2]
    hung_id = int(re.match(r"<delivery-(\d+)\.", hung)[1])
    assert first_outcome[hung_id] == "retry"  # taken by the relay, never answered: not recorded as sent
    assert {d.receipt for d in rows(engine) if d.status == DeliveryStatus.sent} <= set(relay.message_ids())
    arrived = Counter(relay.message_ids())
    assert set(arrived.values()) <= {1} | ({2} if arrived[hung] == 2 else set())  # only the unanswered one again
    assert "reclaimed" not in outcomes(engine)  # the lease keeper held the claims while the sender waited


def test_notices_sent_with_send_share_the_pool_with_pipelined_digests(tmp_path):
    """Confirmations and revision notices call send() on the adapter the
    digests pipeline on: on one shared connection, each message, waited for
    or not, gets its own answer, refusals included."""
    import threading

    from .servers import scripted_smtp

    sink, handler = scripted_smtp(tmp_path / "mail")
    refused = {n for n in range(90) if n % 4 == 1}
    for n in refused:
        handler.refuse_data[f"r{n}@example.org"] = "554 5.7.1 refused"
    adapter = SmtpAdapter(host=sink.host, port=sink.port, mail_from="Briefings <news@example.org>", timeout=5,
                          pool_size=1)
    outcomes = {}

    def outcome(get):
        try:
            return get()
        except PermanentError:
            return "refused"

    def digests(numbers):
        waiting = {n: adapter.send_later(f"r{n}@example.org", CONTENT, delivery_id=n) for n in numbers}
        outcomes.update({n: outcome(r.result) for n, r in waiting.items()})

    def notices(numbers):
        for n in numbers:
            outcomes[n] = outcome(lambda n=n: adapter.send(f"r{n}@example.org", CONTENT, delivery_id=n))

    threads = [threading.Thread(target=digests, args=(range(0, 90, 3),)),
               threading.Thread(target=digests, args=(range(1, 90, 3),)),
               threading.Thread(target=notices, args=(range(2, 90, 3),))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        adapter.close()
    finally:
        sink.stop()
    assert outcomes == {n: "refused" if n in refused else f"<delivery-{n}@example.org>" for n in range(90)}
    assert sorted(mid for _, mid in handler.received) == sorted(
        f"<delivery-{n}@example.org>" for n in range(90) if n not in refused)
    assert handler.connections == 1


def test_a_failed_connect_gives_its_permit_back():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    adapter = SmtpAdapter(host="127.0.0.1", port=dead_port, mail_from="news@example.org", timeout=2, pool_size=1)
    for n in range(3):
        with pytest.raises(TransientError, match="cannot connect"):
            adapter.send_later(f"r{n}@example.org", CONTENT, delivery_id=n)
        assert adapter.connections_in_use == 0  # else the next send would wait for ever for the one permit
