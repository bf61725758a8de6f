from datetime import date

import pytest

from dispatch.errors import SitrepFormatError
from dispatch.sitrep_text import decode_source, parse, parse_date, slugify, split_attribution

from .conftest import FIXTURES


def load(name: str) -> str:
    return (FIXTURES / name).read_text("utf-8")


def test_standard_report_with_curly_quotes_and_two_analysts():
    parsed = parse(load("standard.txt"))
    assert parsed.publication == "Field Notes Weekly"
    assert parsed.title == "Port Strike Halts Grain Shipments from Odesa"
    assert parsed.event_date == date(2025, 3, 3)
    assert parsed.summary == [
        "Dock workers in Odesa walked out on Monday over unpaid wages, stopping the loading of about a dozen grain carriers.",
        "Ukraine's infrastructure ministry said talks with the port authority would resume on Wednesday.",
        "Insurers raised premiums for ships waiting in the Black Sea anchorage.",
    ]
    assert [(q.analyst_title, q.analyst_name) for q in parsed.commentary] == [
        ("Colonel", "Dana Whitfield"), ("Dr.", "Samir Haddad")]
    first = parsed.commentary[0].text
    assert first.startswith("Grain exports are one of Kyiv's")
    assert first.endswith("who rely on these cargoes.")
    assert "“" not in first and "”" not in first


def test_star_bullets_with_wrapped_lines_and_straight_quotes():
    parsed = parse(load("star_bullets_wrapped.txt"))
    assert parsed.title == "Snap Election Called in Japan"
    assert parsed.publication is None
    assert parsed.event_date == date(2025, 6, 14)
    assert parsed.summary[0] == ("The prime minister dissolved the lower house after losing a vote on the "
                                 "defence budget, setting an election for July.")
    assert parsed.summary[1] == "Opposition parties agreed to field joint candidates in about forty districts."
    assert len(parsed.summary) == 3
    (quote,) = parsed.commentary
    assert quote.text == "A weaker mandate in Tokyo would slow plans to double defence spending."
    assert (quote.analyst_title, quote.analyst_name, quote.analyst_slug) == (
        "Admiral", "Grace Holloway", "grace-holloway")


def test_dash_bullets_and_no_commentary_at_all():
    parsed = parse(load("dash_bullets_no_commentary.txt"))
    assert parsed.title == "Flooding Closes Border Crossings Between Kenya and Tanzania"
    assert parsed.event_date == date(2025, 4, 9)
    assert parsed.summary == [
        "Heavy rains washed out the main road at the Namanga crossing.",
        "Trucks carrying fuel to Uganda are stuck on both sides of the border.",
    ]
    assert parsed.commentary == []


def test_quotes_without_quotation_marks_and_attribution_suffixes():
    parsed = parse(load("unquoted_several.txt"))
    assert parsed.event_date == date(2025, 5, 12)
    assert [q.analyst_name for q in parsed.commentary] == ["Mei Lin Zhao", "Lena Okafor"]
    assert parsed.commentary[0].text.startswith("The move signals")
    # Wrapped lines of one paragraph are joined with a space.
    assert parsed.commentary[1].text == (
        "Expect pressure from the presidency on the bank's independence. "
        "It has happened before and the bank held firm.")


def test_inner_quotes_survive_outer_quote_stripping():
    text = load("standard.txt").replace(
        "“Labour unrest is a sign", "“Labour “unrest” is a sign").replace("drag.”", "drag as “usual”.”")
    quote = parse(text).commentary[1].text
    assert quote.startswith("Labour “unrest” is a sign")
    assert quote.endswith("drag as “usual”.")


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_ends_parse_the_same(newline):
    text = load("standard.txt")
    assert parse(text.replace("\n", newline)) == parse(text)


def test_utf8_bom_and_windows_1252_bytes_are_decoded():
    text = load("standard.txt")
    assert parse(decode_source(b"\xef\xbb\xbf" + text.encode("utf-8"))) == parse(text)
    assert parse(decode_source(text.encode("cp1252"))) == parse(text)


@pytest.mark.parametrize("name, reason", [
    ("bad_no_title.txt", "no title and no date"),
    ("bad_date.txt", "cannot read the date 'Septembr 45, 2025'"),
    ("bad_no_bullets.txt", "has no bullets"),
    ("bad_no_sections.txt", "no 'What has Happened:' section"),
    ("bad_orphan_quote.txt", "commentary without an analyst"),
])
def test_malformed_reports_name_the_reason(name, reason):
    with pytest.raises(SitrepFormatError) as caught:
        parse(load(name), source=name)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(name)


def test_bad_date_error_gives_the_line_number():
    with pytest.raises(SitrepFormatError) as caught:
        parse(load("bad_date.txt"), source="bad_date.txt")
    assert caught.value.line == 3


def test_title_without_date_line():
    with pytest.raises(SitrepFormatError, match="no date line"):
        parse("Desk SITREP – Something\nWhat has Happened:\n• a bullet\n")


@pytest.mark.parametrize("raw, reason", [
    (b"", "empty"), (b"  \n\n ", "empty"), (b"\x00\x01\x02binary", "binary"),
])
def test_undecodable_input(raw, reason):
    with pytest.raises(SitrepFormatError, match=reason):
        decode_source(raw, source="x")


@pytest.mark.parametrize("text, expected", [
    ("September 12, 2023", date(2023, 9, 12)),
    ("Sept. 12, 2023", date(2023, 9, 12)),
    ("Sep 12 2023", date(2023, 9, 12)),
    ("12 September 2023", date(2023, 9, 12)),
    ("September 12th, 2023", date(2023, 9, 12)),
    ("2023-09-12", date(2023, 9, 12)),
    ("Tuesday, September 12, 2023", date(2023, 9, 12)),
    ("September 31, 2023", None),
    ("yesterday", None),
])
def test_dates(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize("who, expected", [
    ("General Robert Stone", ("Robert Stone", "General")),
    ("Lt. Gen. Ann Pryce, USAF (Ret.)", ("Ann Pryce", "Lt. Gen.")),
    ("Jane Doe", ("Jane Doe", None)),
])
def test_attribution(who, expected):
    assert split_attribution(who) == expected


def test_slugify_folds_accents():
    assert slugify("José Álvarez-Núñez") == "jose-alvarez-nunez"
    assert slugify("  ") != ""
