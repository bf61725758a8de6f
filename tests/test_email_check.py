"""email_check.check (each domain checked once, for bulk imports) gives
exactly subscribers.check_email's answer — the same address or the same
refusal, word for word — whatever the input, with the cache warm or cold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch import email_check, subscribers
from dispatch.errors import FieldError

DOMAINS = ["example.org", "EXAMPLE.org", "bücher.example", "xn--bcher-kva.example", "ex_ample.org", "-bad.org",
           "a..b.org", "localhost", "org", "[127.0.0.1]", "exa mple.org", "example.org.", "ﬁ.example",
           "x" * 64 + ".org", ("abcdefghi." * 25) + "org", "é" * 60 + ".org", "example.invalid", ""]
LOCALS = st.one_of(
    st.text(alphabet="abcXYZ09._+-!#$%&'*/=?^`{|}~", min_size=0, max_size=70),
    st.sampled_from(["Postmaster", "INFO", "www", "a", '"quoted local"', "Ünïcode", "a b", "Name <x", "é" * 80,
                     "a" * 64, "a" * 65, "x" * 240]),
    st.text(max_size=20),
)


def _outcome(call, address):
    try:
        return "ok", call(address)
    except FieldError as exc:
        return "refused", exc.field, str(exc)


@settings(max_examples=400, deadline=None)
@given(local=LOCALS, domain=st.one_of(st.sampled_from(DOMAINS), st.text(max_size=20)),
       spaces=st.sampled_from(["", " ", "\t"]), extra=st.sampled_from(["", "@", "\n", "\r\n", ">"]))
def test_the_cached_check_answers_as_check_email(local, domain, spaces, extra):
    address = f"{spaces}{local}@{domain}{extra}{spaces}"
    expected = _outcome(subscribers.check_email, address)
    cache: dict = {}
    assert _outcome(lambda a: email_check.check(a, domains=cache), address) == expected  # cold
    assert _outcome(lambda a: email_check.check(a, domains=cache), address) == expected  # warm


def test_one_domain_is_checked_once_for_many_readers():
    cache: dict = {}
    got = [email_check.check(f"reader{n}@Bücher.Example", domains=cache) for n in range(50)]
    assert got[7] == "reader7@bücher.example" and list(cache) == ["Bücher.Example"]


@pytest.mark.parametrize("address", ["no-at-sign", "a@-bad.org", "postmaster@EXAMPLE.org", "a@b@c.org", ""])
def test_refusals_and_special_cases_are_check_emails_own(address):
    assert _outcome(lambda a: email_check.check(a, domains={}), address) == _outcome(subscribers.check_email, address)
