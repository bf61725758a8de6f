"""Rendering: email parts and headers, Slack limits, escaping of hostile
text, template overrides, and shared rendering equal to rendering alone."""

import email
import email.policy
import json
import re
from datetime import date, datetime, timezone

import pytest

from dispatch import digest, email_shape, links, mime
from dispatch.digest import Quote, Recipient, SitrepView
from dispatch.render import EmailRenderer, Personal, build_environment, subject_for
from dispatch.render_slack import MAX_BLOCKS, MAX_HEADER, MAX_SECTION, SlackRenderer, slack_length

SECRET = "test-secret"
NOW = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)
HOSTILE = ('<script>alert("x")</script> & <!channel> <https://evil.example|click here> '
           '«Привет» مرحبا 你好 🚀🇺🇦 ' + "x" * 5000)


def view(id=1, *, title="Ports reopen in the Red Sea", summary=("Ships are moving again.",), quotes=(), day=date(2026, 11, 26)):
    return SitrepView(id=id, title=title, event_date=day, approved_at=NOW, regions=("middle-east-north-africa",),
                      region_names=("Middle East and North Africa",), summary=tuple(summary),
                      commentary=tuple(Quote(slug, name, "Dr.", text) for slug, name, text in quotes))


def reader(**kw):
    base = dict(id=7, kind="email", address="reader@example.org", name="Ana Ortiz",
                regions=frozenset({"middle-east-north-africa"}), region_names=("Middle East and North Africa",))
    base.update(kw)
    return Recipient(**base)


def personal_for(r):
    urls = links.subscriber_links("https://news.example.org/", SECRET, subscriber_id=r.id, address=r.address)
    return Personal.for_recipient(r, preferences_url=urls.preferences_url, unsubscribe_url=urls.unsubscribe_url,
                                  view_url=f"https://news.example.org/view/{r.id}.sig")


@pytest.fixture(scope="module")
def renderer():
    return EmailRenderer()


def build(content, to="reader@example.org"):
    raw = mime.build_message(content, sender="Dispatch <news@example.org>", to=to,
                             msg_id=mime.message_id(42, "example.org"), list_id="<briefings.example.org>",
                             unsubscribe_mailto="news@example.org", date=NOW)
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_email_is_multipart_alternative_with_inline_styles_and_signed_links(renderer):
    r = reader()
    d = digest.build_digest(r, "daily:2026-11-27", [view(quotes=[("a-b", "Ann Bell", "Trade resumes slowly.")])])
    msg = build(renderer.render(d, personal_for(r)))
    assert msg.get_content_type() == "multipart/alternative"
    text_part, html_part = msg.get_payload()
    assert (text_part.get_content_type(), html_part.get_content_type()) == ("text/plain", "text/html")
    html = html_part.get_content()
    assert re.search(r'<h1 class="headline" style="[^"]*font-size: 22px', html)
    assert "<style>" not in html.replace("<style>@media", "")  # only @media rules stay in a style block
    hrefs = re.findall(r'href="([^"]+)"', html)
    for purpose in ("preferences", "unsubscribe"):
        (url,) = [h for h in hrefs if f"/{purpose}/" in h]
        assert url.startswith(f"https://news.example.org/{purpose}/")
        claims = links.read_token(SECRET, url.rsplit("/", 1)[1], purpose=purpose)
        assert claims.subscriber_id == 7 and claims.is_for("reader@example.org")
        assert url in text_part.get_content()
    assert msg["Message-ID"] == "<delivery-42@example.org>"
    assert msg["List-Id"] == "<briefings.example.org>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert unsubscribe[0].startswith("https://news.example.org/unsubscribe/")
    assert unsubscribe[1].startswith("mailto:news@example.org?subject=unsubscribe")
    assert "You receive this because you follow Middle East and North Africa, from all analysts." in html
    assert "Trade resumes slowly." in text_part.get_content()


def test_text_format_reader_gets_plain_text_only(renderer):
    r = reader(format="text")
    msg = build(renderer.render(digest.build_digest(r, "k", [view()]), personal_for(r)))
    assert msg.get_content_type() == "text/plain"
    assert "Ships are moving again." in msg.get_content()


def test_subjects():
    r = reader()
    one = digest.build_digest(r, "k", [view(1, title="Alpha")])
    three = digest.build_digest(r, "k", [view(1, title="Alpha", day=date(2026, 11, 1)),
                                         view(2, title="Beta", day=date(2026, 11, 3)), view(3, title="Gamma")])
    assert subject_for(one) == "Alpha"
    assert subject_for(three) == "Gamma, Beta, Alpha"


def test_header_injection_is_impossible(renderer):
    r = reader(name="Eve\r\nBcc: victim@example.org")
    d = digest.build_digest(r, "k", [view(title="Title\r\nBcc: victim@example.org")])
    msg = build(renderer.render(d, personal_for(r)))
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Title Bcc: victim@example.org"


def test_hostile_text_is_escaped_in_html_and_intact_in_text(renderer):
    r = reader(analysts=frozenset({"x"}))
    d = digest.build_digest(r, "k", [view(title=HOSTILE[:300], summary=(HOSTILE,), quotes=[("x", "<b>Bold</b>", HOSTILE)])])
    content = renderer.render(d, personal_for(r))
    assert "<script>" not in content.html and "<b>Bold</b>" not in content.html
    assert "&lt;script&gt;alert(" in content.html
    assert "&lt;!channel&gt;" in content.html
    for piece in ("«Привет» مرحبا 你好 🚀🇺🇦", "x" * 5000):
        assert piece in content.html and piece in content.text
    assert '<script>alert("x")</script>' in content.text  # plain text shows it as written
    msg = build(content)
    assert "🚀🇺🇦" in msg.get_payload()[1].get_content()


def test_hostile_text_is_escaped_and_intact_in_slack():
    r = reader(kind="slack", address="C0123ABCD")
    d = digest.build_digest(r, "k", [view(title=HOSTILE[:300], summary=(HOSTILE,), quotes=[("x", "<!here>", HOSTILE)])])
    (message,) = SlackRenderer().render(d).messages
    # The title is a rich_text "text" element: structure, shown as written,
    # never parsed for mentions or links (those are elements of their own).
    (title,) = [b for b in message.blocks if b["type"] == "rich_text"]
    (element,) = title["elements"][0]["elements"]
    assert element["type"] == "text" and element["text"].startswith('<script>alert("x")</script> & <!channel>')
    payload = json.dumps([message.text, [b for b in message.blocks if b is not title]], ensure_ascii=False)
    assert "<!channel>" not in payload and "<!here>" not in payload and "<https://evil" not in payload
    assert "&lt;!channel&gt;" in payload and "&lt;https://evil.example|click here&gt;" in payload
    sections = "".join(b["text"]["text"] for b in message.blocks if b["type"] == "section")
    assert sections.count("x" * 2000) >= 2  # the long line is split but every character is kept
    assert sections.count("x") >= 2 * 5000
    assert "«Привет» مرحبا 你好 🚀🇺🇦" in sections
    _assert_within_limits([message])


def _assert_within_limits(messages):
    for message in messages:
        assert 0 < len(message.blocks) <= MAX_BLOCKS
        assert message.text and slack_length(message.text) <= 3000
        for block in message.blocks:
            if block["type"] == "header":
                assert slack_length(block["text"]["text"]) <= MAX_HEADER
            if block["type"] == "section":
                assert 0 < slack_length(block["text"]["text"]) <= MAX_SECTION
                assert not re.search(r"&[a-z]*$", block["text"]["text"])  # no entity cut in half


def test_thirty_long_sitreps_split_into_ordered_messages_within_limits():
    long_bullets = tuple(f"Bullet {n}: " + "déjà vu 🚀 " * 60 for n in range(8))
    quotes = [(f"a{n}", f"Analyst {n}", "Long commentary. " * 250) for n in range(3)]
    sitreps = [view(n, title=f"SITREP number {n:02d} " + "with a very long title " * 10, summary=long_bullets,
                    quotes=quotes, day=date(2026, 1, 1 + n)) for n in range(30)]
    messages = SlackRenderer().render(digest.build_digest(reader(kind="slack"), "k", sitreps)).messages
    assert len(messages) > 1
    _assert_within_limits(messages)
    headers = [b["elements"][0]["elements"][0]["text"] for m in messages for b in m.blocks if b["type"] == "rich_text"]
    assert [h[:16] for h in headers] == [f"SITREP number {n:02d}" for n in range(29, -1, -1)]  # newest first
    assert all(f"(part {i} of {len(messages)})" in m.text for i, m in enumerate(messages, start=1))


def test_one_sitrep_longer_than_fifty_blocks_still_goes_out():
    quotes = [(f"a{n}", f"Analyst {n}", "Commentary. " * 300) for n in range(40)]
    messages = SlackRenderer().render(digest.build_digest(reader(kind="slack"), "k", [view(quotes=quotes)])).messages
    assert len(messages) >= 2
    _assert_within_limits(messages)


@pytest.mark.parametrize("name", ["Ana Ortiz", 'O\'Brien & "Sons" <admin>', "Zoë\u00a0Núñez", ""])
def test_shared_rendering_equals_rendering_alone(renderer, name):
    s = view(quotes=[("a-b", "Ann Bell", "Trade resumes slowly & carefully.")], summary=("Tom & Jerry <3",))
    for fmt in ("html", "text"):
        first, second = reader(id=1, name="First", format=fmt), reader(id=2, name=name, format=fmt,
                                                                          address="second@example.org")
        d1, d2 = (digest.build_digest(x, "k", [s]) for x in (first, second))
        assert d1.body_key() == d2.body_key()
        shared = renderer.shared(d1)
        for d in (d1, d2):
            alone = renderer.render(d, personal_for(d.recipient))
            assert renderer.personalise(shared, personal_for(d.recipient)).as_content() == alone


GROUP_NAMES = ["Ana Ortiz", 'O\'Brien & "Sons" <admin>', "Zoë\u00a0Núñez", "", ".Dot at the start", "N" * 1200]


@pytest.mark.parametrize("fmt", ["html", "text"])
@pytest.mark.parametrize("eight_bit", [True, False])
@pytest.mark.parametrize("long_line", [False, True])
def test_message_bytes_spliced_for_a_group_equal_building_each_alone(renderer, fmt, eight_bit, long_line):
    summary = ("Tom & Jerry <3", ".a bullet that starts with a dot", "é" * 1500 if long_line else "short")
    s = view(quotes=[("a-b", "Ann Bell", "Trade resumes slowly & carefully.\n\n.Then faster.")], summary=summary)
    shared = None
    for n, name in enumerate(GROUP_NAMES):
        r = reader(id=n + 1, name=name, format=fmt, address=f"r{n}@example.org")
        d = digest.build_digest(r, "k", [s])
        shared = shared or renderer.shared(d)  # the first reader's rendering serves the group
        grouped = renderer.personalise(shared, personal_for(r))
        kwargs = dict(sender="Dispatch <news@example.org>", to=r.address, msg_id=mime.message_id(n, "example.org"),
                      list_id="<briefings.example.org>", unsubscribe_mailto="news@example.org", date=NOW,
                      eight_bit=eight_bit)
        assert mime.build_message(grouped, **kwargs) == mime.build_message(grouped.as_content(), **kwargs)
        # The splice is really used for ordinary readers, and set aside where it cannot give the same bytes.
        spliced = mime._eight_bit_parts(grouped)
        # (a long name is shortened in the greeting, so it no longer makes a line too long)
        assert (spliced is not None) == (not long_line)


def test_a_personal_value_that_is_empty_or_breaks_a_line_takes_the_general_path(renderer):
    r = reader(format="html")
    shared = renderer.shared(digest.build_digest(r, "k", [view()]))
    urls = personal_for(r)
    kwargs = dict(sender="Dispatch <news@example.org>", to=r.address, msg_id=mime.message_id(1, "example.org"),
                  list_id="<briefings.example.org>", unsubscribe_mailto="news@example.org", date=NOW, eight_bit=True)
    for greeting in ("", "Hello\r\nBcc: x@example.org", "Hello\n.\n"):
        personal = Personal(greeting=greeting, reason="why", preferences_url=urls.preferences_url,
                            unsubscribe_url=urls.unsubscribe_url)
        grouped = renderer.personalise(shared, personal)
        assert mime._eight_bit_parts(grouped) is None
        assert mime.build_message(grouped, **kwargs) == mime.build_message(grouped.as_content(), **kwargs)


def test_user_templates_override_by_name_and_fall_back(tmp_path):
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "digest.txt.j2").write_text("CUSTOM {{ subject }}\n{{ personal.unsubscribe_url }}\n")
    renderer = EmailRenderer(environment=build_environment(tmp_path))
    r = reader()
    content = renderer.render(digest.build_digest(r, "k", [view(title="Alpha")]), personal_for(r))
    assert content.text.startswith("CUSTOM Alpha\nhttps://news.example.org/unsubscribe/")
    assert "sitrep-title" in content.html  # the HTML template is still the shipped one


def test_tokens_cannot_be_forged_reused_or_kept_forever():
    token = links.make_token(SECRET, subscriber_id=3, address="a@example.org", purpose="unsubscribe")
    assert links.read_token(SECRET, token, purpose="unsubscribe").subscriber_id == 3
    with pytest.raises(links.TokenError, match="not valid"):
        links.read_token("another-secret", token, purpose="unsubscribe")
    with pytest.raises(links.TokenError, match="not valid"):
        links.read_token(SECRET, token, purpose="preferences")  # made for another purpose
    for garbage in ("", "abc", "1-x.y.z", token + "x", token.replace("-", "9", 1)):
        with pytest.raises(links.TokenError, match="not valid"):
            links.read_token(SECRET, garbage, purpose="unsubscribe")
    tampered = token.replace(token.split(".")[0], links.make_token(SECRET, subscriber_id=4, address="a@example.org",
                                                                  purpose="unsubscribe").split(".")[0])
    with pytest.raises(links.TokenError):
        links.read_token(SECRET, tampered, purpose="unsubscribe")
    assert not links.read_token(SECRET, token, purpose="unsubscribe").is_for("b@example.org")
    issued = 1_800_000_000
    confirm = links.make_token(SECRET, subscriber_id=3, address="a@example.org", purpose="confirm", now=issued)
    assert links.read_token(SECRET, confirm, purpose="confirm", now=issued + 3600).subscriber_id == 3
    with pytest.raises(links.TokenError) as caught:
        links.read_token(SECRET, confirm, purpose="confirm",
                         now=issued + links.MAX_AGE["confirm"].total_seconds() + 60)
    assert caught.value.expired


def test_tokens_are_itsdangerous_tokens_byte_for_byte():
    """The faster signer makes exactly what itsdangerous's own signer makes
    (and reads back), so links already in inboxes keep working."""
    from itsdangerous import TimestampSigner

    issued = 1_800_000_000
    for purpose in links.MAX_AGE:
        ours = links.make_token(SECRET, subscriber_id=42, address="a@example.org", purpose=purpose, now=issued)
        reference = TimestampSigner(SECRET, salt=f"dispatch-subscriber-{purpose}")
        reference.get_timestamp = lambda: issued
        assert ours == reference.sign(f"42-{links.address_tag('a@example.org')}").decode()
        assert reference.unsign(ours) == f"42-{links.address_tag('a@example.org')}".encode()


def test_non_ascii_subject_and_sender_survive_the_round_trip(renderer):
    r = reader()
    title = "Élections au Sénégal : « calme » à Dakar — 选举 🗳️ " + "long " * 30
    content = renderer.render(digest.build_digest(r, "k", [view(title=title)]), personal_for(r))
    raw = mime.build_message(content, sender="Dépêche Briefings <news@example.org>", to="reader@example.org",
                             msg_id="<delivery-1@example.org>", list_id="<b.example.org>",
                             unsubscribe_mailto="news@example.org", date=NOW)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == email_shape.shorten(title, email_shape.SUBJECT_LIMIT)
    assert msg["Subject"].startswith("Élections au Sénégal : « calme » à Dakar — 选举 🗳️ long")
    assert msg["From"].addresses[0].display_name == "Dépêche Briefings"
    assert msg.get_payload()[0].get_content().replace("\r\n", "\n") == content.text
    assert msg.get_payload()[1].get_content().replace("\r\n", "\n") == content.html
