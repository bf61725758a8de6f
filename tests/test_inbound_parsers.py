"""Property tests of the DSN and ARF readers on hostile field values: a
reading with a valid status (or none), or None; never an exception."""

import email.errors
import email.message

import pytest

from hypothesis import given, strategies as st

from dispatch.inbound import arf, dsn, mailparts, outcomes

from .test_inbound import arf as make_arf, dsn as make_dsn

ORIGINAL = email.message.Message()
ORIGINAL["Message-ID"] = "<delivery-1.abc@example.org>"
ORIGINAL["To"] = "reader@example.org"
ORIGINAL.set_payload("text\n")

field = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=300)


@given(field, field, field)
def test_a_dsn_with_any_fields_is_read_or_ignored(status, action, recipient):
    try:
        data = make_dsn(ORIGINAL, status=status, action=action, recipient=recipient)
    # The email package would not build it either (a "\x1e" is a line break to str.splitlines).
    except (ValueError, UnicodeError, email.errors.HeaderParseError):
        return
    bounce = dsn.read(mailparts.parse(data))
    assert bounce is not None  # it is a multipart/report from MAILER-DAEMON
    assert bounce.status is None or outcomes.valid_status(bounce.status) == bounce.status
    assert outcomes.status_class(bounce.status, action=bounce.action) in set(outcomes.Kind)
    assert len(bounce.diagnostic) <= 500


@given(field, field)
def test_an_arf_report_with_any_fields_is_read(recipient, mail_from):
    try:
        data = make_arf(ORIGINAL, recipient=recipient, mail_from=mail_from)
    except (ValueError, UnicodeError):
        return
    complaint = arf.read(mailparts.parse(data))
    assert complaint is not None and complaint.is_complaint
    assert complaint.returned_message_id == "<delivery-1.abc@example.org>"


@given(st.binary(max_size=5000))
def test_any_bytes_are_a_bounce_a_complaint_or_neither(data):
    message = mailparts.parse(data)
    dsn.read(message, null_sender=True)
    arf.read(message)


def test_a_message_nested_a_thousand_deep_is_refused_as_unreadable():
    """The stdlib parser recurses once per level: a 60 KB nesting bomb must be
    a clear refusal, not a RecursionError (exit 1 with a traceback on --stdin)."""
    depth = 1000
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    with pytest.raises(mailparts.MailError, match="nested too deeply"):
        mailparts.parse(b"From: x@example.com\r\n" + head + b"end\r\n")
