"""SMTP dot-stuffing (RFC 5321 4.5.2) done on a shared body's parts once per
body (``mime.build_message(stuffed=True)``) gives exactly what stuffing the
whole message gives, for every reader; and such messages arrive intact."""

import email
import email.policy
import smtplib
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from dispatch import digest, mime
from dispatch.adapters.smtp import SmtpAdapter
from dispatch.render import PERSONAL_FIELDS, EmailRenderer, Personal, PersonalisedEmail, SharedEmail

from .servers import scripted_smtp
from .test_render import GROUP_NAMES, personal_for, reader, view

NOW = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)


def kwargs_for(n: int, *, eight_bit: bool) -> dict:
    return dict(sender="Dispatch <news@example.org>", to=f"r{n}@example.org", msg_id=mime.message_id(n, "example.org"),
                list_id="<briefings.example.org>", unsubscribe_mailto="news@example.org", date=NOW,
                eight_bit=eight_bit)


@given(st.lists(st.sampled_from([b".", b"..", b"a", b"\r\n", b" "]), max_size=40))
def test_dot_stuffed_is_what_smtplib_sends_for_crlf_text(tokens):
    data = b"".join(tokens)
    assert mime.dot_stuffed(data) == smtplib.quotedata(data.decode("ascii")).encode("ascii")


@pytest.fixture(scope="module")
def renderer():
    return EmailRenderer()


@pytest.mark.parametrize("fmt", ["html", "text"])
@pytest.mark.parametrize("eight_bit", [True, False])
def test_a_groups_messages_stuffed_per_part_equal_the_whole_message_stuffed(renderer, fmt, eight_bit):
    # Lines that start with a dot in the shared body (a bullet, a quote's
    # paragraph) and at a personal value (a name that starts with one).
    s = view(title=".Ports reopen, a title that starts with a dot", summary=(".a bullet", "plain"),
             quotes=[("a-b", "Ann Bell", "Trade resumes.\n\n.Then faster.\n\n..and two")])
    shared = None
    for n, name in enumerate(GROUP_NAMES):
        r = reader(id=n + 1, name=name, format=fmt, address=f"r{n}@example.org")
        shared = shared or renderer.shared(digest.build_digest(r, "k", [s]))
        grouped = renderer.personalise(shared, personal_for(r))
        kwargs = kwargs_for(n, eight_bit=eight_bit)
        plain = mime.build_message(grouped, **kwargs)
        assert b"\r\n." in plain  # there is something to stuff
        assert mime.build_message(grouped, stuffed=True, **kwargs) == mime.dot_stuffed(plain)
        assert mime.build_message(grouped.as_content(), stuffed=True, **kwargs) == mime.dot_stuffed(plain)


# Text for literal pieces and personal values: dots, line ends of every
# kind, characters the HTML escaping changes, and some non-ASCII.
_TEXT = st.lists(st.sampled_from([".", "\n", "\r", "\r\n", "a", " ", "&", "<", '"', "\u00a0", "é"]),
                 max_size=12).map("".join)
# Values as the splice takes them (never empty, no line end), and sometimes not.
_VALUE = st.one_of(st.lists(st.sampled_from([".", "a", " ", "&", "<", '"', "\u00a0", "é"]), min_size=1,
                            max_size=6).map("".join), _TEXT)


@st.composite
def personalised(draw):
    """A shared body of arbitrary literal pieces around arbitrary personal
    fields, with arbitrary values for one reader."""
    def pieces():
        names = draw(st.lists(st.sampled_from(PERSONAL_FIELDS), max_size=6))
        literals = [draw(_TEXT) for _ in range(len(names) + 1)]
        joined = [None] * (2 * len(names) + 1)
        joined[0::2], joined[1::2] = literals, names
        return tuple(joined)

    text_pieces = pieces()
    shared = SharedEmail(subject="Dots", text_pieces=text_pieces, html_pieces=pieces() if draw(st.booleans()) else None)
    values = {name: draw(_VALUE) for name in ("greeting", "reason", "reason_text", "view_url")}
    personal = Personal(preferences_url=draw(_VALUE.filter(str.isprintable)),
                        unsubscribe_url="https://x.example/u/t", **values)
    return PersonalisedEmail(shared, personal)


@hsettings(max_examples=400, deadline=None)
@given(personalised(), st.booleans())
def test_any_shared_body_and_values_stuffed_per_part_equal_the_whole_message_stuffed(content, eight_bit):
    kwargs = kwargs_for(1, eight_bit=eight_bit)
    plain = mime.build_message(content, **kwargs)
    assert mime.build_message(content, stuffed=True, **kwargs) == mime.dot_stuffed(plain)
    # and the splice agrees with the general path, stuffed too
    assert mime.build_message(content.as_content(), stuffed=True, **kwargs) == mime.dot_stuffed(plain)


def test_a_shared_body_with_dotted_lines_arrives_intact_over_smtp(tmp_path, renderer):
    sink, handler = scripted_smtp(tmp_path / "mail", pipelining=True)
    try:
        adapter = SmtpAdapter(host=sink.host, port=sink.port, mail_from="Briefings <news@example.org>", timeout=5)
        s = view(title=".Dotted title", summary=(".a bullet",), quotes=[("a-b", "Ann Bell", "One.\n\n.Two.\n\n..")])
        shared, sent = None, []
        for n, name in enumerate(["Ana Ortiz", ".Dot at the start", "Zoë"]):
            r = reader(id=n + 1, name=name, format="html", address=f"r{n}@example.org")
            shared = shared or renderer.shared(digest.build_digest(r, "k", [s]))
            grouped = renderer.personalise(shared, personal_for(r))
            assert mime._eight_bit_parts(grouped) is not None  # the spliced path is the one under test
            adapter.send(r.address, grouped, delivery_id=n + 1)
            sent.append(grouped)
        adapter.close()
    finally:
        sink.stop()
    messages = {msg["To"]: msg for msg in (email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                                           for p in handler.folder.glob("*.eml"))}
    assert len(messages) == 3
    for n, grouped in enumerate(sent):
        msg = messages[f"r{n}@example.org"]
        text, html = msg.get_payload()
        assert text["Content-Transfer-Encoding"] == "8bit"
        assert text.get_content().replace("\r\n", "\n") == grouped.text.replace("\r\n", "\n")
        assert html.get_content().replace("\r\n", "\n") == grouped.html.replace("\r\n", "\n")
    assert any("\n." in grouped.text for grouped in sent)
