"""The pure part of corrections (dispatch.desk.corrections): the readable
diff, who is told, which Slack message carried a SITREP, window keys."""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from dispatch.desk import corrections
from dispatch.desk.corrections import Received

BEFORE = corrections.snapshot(title="Ports close", event_date="2026-12-01",
                              bullets=["Three ports closed.", "Talks on Monday."],
                              quotes=[("Dr. Ann Bell", "It matters.")])


def test_the_diff_reads_title_date_bullets_and_quotes_in_order():
    after = {**BEFORE, "title": "Ports reopen", "bullets": ["Three ports closed.", "Talks on Tuesday.", "New."],
             "quotes": [["Dr. Ann Bell", "It matters a lot."]]}
    lines = [c.line() for c in corrections.diff(BEFORE, after)]
    assert lines == ["- title: Ports close", "+ title: Ports reopen",
                     "- bullet: Talks on Monday.", "+ bullet: Talks on Tuesday.", "+ bullet: New.",
                     "- quote: “It matters.” — Dr. Ann Bell", "+ quote: “It matters a lot.” — Dr. Ann Bell"]
    assert corrections.changed_parts(corrections.diff(BEFORE, after)) == ["title", "bullets", "quotes"]
    assert corrections.diff(BEFORE, BEFORE) == []


@given(st.lists(st.sampled_from("abcdef"), max_size=12), st.lists(st.sampled_from("abcdef"), max_size=12))
def test_removed_and_added_lines_account_for_every_difference(old, new):
    changes = corrections.diff({**BEFORE, "bullets": old}, {**BEFORE, "bullets": new})
    removed = Counter(c.text for c in changes if c.sign == "-")
    added = Counter(c.text for c in changes if c.sign == "+")
    assert removed <= Counter(old) and added <= Counter(new)
    assert Counter(old) - removed == Counter(new) - added  # what is left is what both share
    assert (changes == []) == (old == new)


def test_shown_is_bounded():
    changes = corrections.diff({**BEFORE, "bullets": []}, {**BEFORE, "bullets": [str(i) for i in range(100)]})
    shown, more = corrections.shown(changes, limit=10)
    assert len(shown) == 10 and more == 90


def test_only_active_readers_a_digest_reached_are_told_once_each():
    received = [Received(1, 10, "daily:2026-12-01", True), Received(2, 10, "sitrep:5@x", True),
                Received(3, 11, "daily:2026-12-01", False), Received(4, 12, "correction:5:2", True),
                Received(5, 13, "weekly:2026-w48", True)]
    assert corrections.to_tell(received) == [10, 13]


def test_the_slack_message_that_carried_the_sitrep():
    receipt = json.dumps({"channel": "C1", "ts": ["1.1", "1.2"], "sitreps": [[4, 5], [6]]})
    assert corrections.slack_post(receipt, 6) == corrections.SlackPost("C1", "1.2", (6,))
    assert corrections.slack_post(receipt, 5) == corrections.SlackPost("C1", "1.1", (4, 5))
    old = json.dumps({"channel": "C1", "ts": ["1.1"]})  # before receipts named the SITREPs
    assert corrections.slack_post(old, 6, delivered=(6, 7)) == corrections.SlackPost("C1", "1.1", (6, 7))
    several = json.dumps({"channel": "C1", "ts": ["1.1", "1.2"]})
    assert corrections.slack_post(several, 6, delivered=(6, 7)).carried is None  # reply only
    assert corrections.slack_post(json.dumps({"channel": "webhook", "ts": ["ok"]}), 6) is None
    for bad in (None, "", "not json", "[1]", json.dumps({"channel": "C1", "ts": []}), json.dumps({"ts": ["1"]})):
        assert corrections.slack_post(bad, 6) is None


def test_a_receipt_names_its_sitreps_only_while_it_fits():
    receipt = {"channel": "C1", "ts": ["1.1"]}
    assert corrections.receipt_sitreps(receipt, [(1, 2)], room=500)["sitreps"] == [[1, 2]]
    assert "sitreps" not in corrections.receipt_sitreps(receipt, [tuple(range(1000))], room=500)
    assert corrections.receipt_sitreps(receipt, [()], room=500) == receipt


def test_window_keys_round_trip():
    key = corrections.window_key("retraction", 12, 3)
    assert key == "retraction:12:3" and corrections.parse_key(key) == ("retraction", 12, 3)
    assert corrections.is_notice_key(key) and not corrections.is_notice_key("daily:2026-12-01")
    assert corrections.parse_key("correction:x:1") is None and corrections.parse_key("sitrep:1@x") is None


def test_notice_messages_validate_as_block_kit_and_show_markup_as_text():
    from datetime import date, datetime, timezone

    from slack_sdk.models.blocks import Block

    from dispatch.digest import Quote, Recipient, SitrepView
    from dispatch.render import build_environment
    from dispatch.render_revision import Notice, RevisionRenderer
    from dispatch.render_slack import MAX_BLOCKS, SlackRenderer

    env = build_environment()
    renderer = RevisionRenderer(environment=env, brand="Desk", postal_address=None, slack=SlackRenderer(environment=env))
    at = datetime(2026, 12, 3, 9, tzinfo=timezone.utc)
    markup = "<!channel> *bold* <https://evil.example|click>"
    changes = tuple(corrections.diff(BEFORE, {**BEFORE, "bullets": [markup] * 40}))
    view = SitrepView(id=1, title=markup, event_date=date(2026, 12, 1), approved_at=at, regions=("global",),
                      region_names=("Global",), summary=(markup,) * 30,
                      commentary=(Quote("a", "Ann Bell", "Dr.", "Words. " * 300),) * 10)
    reader = Recipient(id=1, kind="slack", address="C1")
    for kind in ("correction", "retraction"):
        notice = Notice(kind=kind, sitrep_id=1, number=2, title=markup, event_date=date(2026, 12, 1),
                        note=markup * 20, changes=changes, at=at, url="https://news.example.org/archive/1")
        for message in (renderer.updated_post(notice, reader, [view]), renderer.note_message(notice)):
            assert 0 < len(message.blocks) <= MAX_BLOCKS
            for block in message.blocks:
                Block.parse(block).validate_json()
            # Plain text is escaped (Slack decodes &lt; &gt; &amp;); a rich_text element is structure, as it is.
            texts = [t for b in message.blocks if b["type"] in ("section", "context")
                     for t in ([b["text"]["text"]] if b["type"] == "section" else [e["text"] for e in b["elements"]])]
            assert texts and not any("<!channel>" in t for t in texts)
            assert any("&lt;!channel&gt;" in t for t in texts)
