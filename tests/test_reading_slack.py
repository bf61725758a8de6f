"""Slack posts that read well (issue 15, part 4): an intro line, titles
linked to the archive, text shown as written, no unfurling, and payloads
that slack_sdk's own Block Kit models accept within Slack's limits."""

from datetime import date, datetime, timezone

import pytest
from slack_sdk.models.blocks import Block

from dispatch import digest, links
from dispatch.adapters.slack import SlackAdapter
from dispatch.digest import Quote, Recipient, SitrepView
from dispatch.render_slack import MAX_BLOCKS, SlackRenderer
from dispatch.sink import SlackSink

NOW = datetime(2026, 11, 27, 7, tzinfo=timezone.utc)
SITE = "https://news.example.org"
TOKEN = "xoxb-test"
MARKUP = "*asterisks* _under_ ~strike~ `code` https://example.com/x"


def view(n, *, title=None, summary=None, analyst="Ann Bell"):
    return SitrepView(id=n, title=title or f"SITREP {n}", event_date=date(2026, 11, 1 + n % 25), approved_at=NOW,
                      regions=("europe",), region_names=("Europe and Eurasia",),
                      summary=summary or (f"Bullet of {n}. " * 30,),
                      commentary=(Quote("a", analyst, "Dr.", "Commentary. " * 200),))


def renderer(mode="readers"):
    return SlackRenderer(brand="The Northern Desk", archive=links.ArchiveLinks(SITE, "k", mode=mode))


def validate(message):
    """Every block through slack_sdk's model validation (lengths, required fields, counts)."""
    assert 0 < len(message.blocks) <= MAX_BLOCKS
    for block in message.blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        assert parsed.to_dict() == block  # nothing we send is unknown to the models


def test_digest_messages_validate_and_open_with_an_intro_line():
    r = Recipient(id=1, kind="slack", address="C0123ABCD", cadence="daily")
    messages = renderer().render(digest.build_digest(r, "k", [view(n) for n in range(1, 31)])).messages
    assert len(messages) > 1
    for part, message in enumerate(messages, start=1):
        validate(message)
        intro = message.blocks[0]
        assert intro["type"] == "context"
        assert intro["elements"][0]["text"] == f"The Northern Desk · Daily briefing · part {part} of {len(messages)}"


def test_titles_link_to_their_archive_pages():
    r = Recipient(id=1, kind="slack", address="C0123ABCD")
    (message,) = renderer().render(digest.build_digest(r, "k", [view(4, title="Ports reopen")])).messages
    (title,) = [b for b in message.blocks if b["type"] == "rich_text"]
    (link,) = title["elements"][0]["elements"]
    assert link["type"] == "link" and link["text"] == "Ports reopen" and link["style"] == {"bold": True}
    assert link["url"] == f"{SITE}/archive/4?t={links.sitrep_token('k', 4)}"
    assert message.blocks[0]["elements"][0]["text"] == "The Northern Desk · Daily briefing"  # one part: no count
    (unlinked,) = [b for b in renderer("off").render(digest.build_digest(r, "k", [view(4)])).messages[0].blocks
                   if b["type"] == "rich_text"]
    assert unlinked["elements"][0]["elements"][0]["type"] == "text"


def test_markup_characters_in_text_and_names_are_never_formatting():
    r = Recipient(id=1, kind="slack", address="C0123ABCD")
    d = digest.build_digest(r, "k", [view(1, title=MARKUP, summary=(MARKUP,), analyst="*Ann* _Bell_")])
    (message,) = renderer().render(d).messages
    validate(message)
    texts = []
    for block in message.blocks:
        if block["type"] in ("section", "header"):
            assert block["text"]["type"] == "plain_text"  # never mrkdwn: shown as written
            texts.append(block["text"]["text"])
        elif block["type"] == "context":
            assert all(e["type"] == "plain_text" for e in block["elements"])
            texts += [e["text"] for e in block["elements"]]
        elif block["type"] == "rich_text":
            for element in block["elements"][0]["elements"]:
                assert element["type"] in ("text", "link") and set(element.get("style", {})) <= {"bold"}
                texts.append(element["text"])
    joined = "\n".join(texts)
    assert joined.count(MARKUP) == 2  # the title and the bullet, character for character
    assert "— Dr. *Ann* _Bell_" in joined


@pytest.fixture
def sink(tmp_path):
    server = SlackSink(tmp_path / "slack", token=TOKEN).start()
    yield server
    server.stop()


@pytest.mark.parametrize("address", ["C0123ABCD", "webhook"])
def test_posts_do_not_unfurl_links_and_do_not_format_the_fallback(sink, address):
    if address == "webhook":
        address = sink.webhook_url("desk")
    r = Recipient(id=1, kind="slack", address="C0123ABCD")
    content = renderer().render(digest.build_digest(r, "k", [view(1, title=MARKUP)]))
    SlackAdapter(token=TOKEN, base_url=sink.base_url, min_interval=0, webhook_hosts=("127.0.0.1",),
                 private_networks=("127.0.0.1/32",)).send(
        address, content, delivery_id=1)
    (post,) = sink.posts
    assert post["unfurl_links"] in (False, "false", "0") and post["unfurl_media"] in (False, "false", "0")
    assert post["mrkdwn"] in (False, "false", "0")
    assert MARKUP in post["text"]
