"""Content is content: text in a SITREP that looks like one of dispatch's
own markers (the personal-part placeholders, the MIME boundary, template
syntax) is shown as written and changes nothing about how a message is
built — in the shared rendering the sender uses, in rendering alone, in
the message bytes and in Slack."""

import email
import email.policy
import hashlib
import json

import pytest

from dispatch import digest, mime
from dispatch.digest import Quote, SitrepView
from dispatch.render import PERSONAL_FIELDS, EmailRenderer
from dispatch.render_slack import SlackRenderer
from tests.test_render import NOW, personal_for, reader

MSG_ID = mime.message_id(42, "example.org")
# What the placeholders looked like (the old fixed form), what they look
# like now (a hex token around the field name; this one is not the live
# token, which no content can know), an unknown name, the old Message-ID
# derived boundary of MSG_ID, and template syntax.
FAKE_TOKEN = "0123456789abcdef" * 2
FORMS = (
    [f"@@dispatch:{name}@@" for name in (*PERSONAL_FIELDS, "oops")]
    + [f"{FAKE_TOKEN}{name}{FAKE_TOKEN}" for name in (*PERSONAL_FIELDS, "oops")]
    + [FAKE_TOKEN, "--=_dispatch_" + hashlib.sha1(MSG_ID.encode()).hexdigest()[:20],
       "{{ personal.unsubscribe_url }}", "{% raw %}"]
)


def sitrep_holding(form: str) -> SitrepView:
    """Every text field of a SITREP holds the form, each on a line of its own too."""
    return SitrepView(
        id=1, title=form, event_date=NOW.date(), approved_at=NOW, regions=("global",),
        region_names=(form, f"Region {form}"), summary=(form, f"A bullet with {form} inside.", form),
        commentary=(Quote("a-b", form, form, form), Quote("c-d", f"Ann {form}", None, f"Quote: {form}\n{form}")))


@pytest.fixture(scope="module")
def renderer():
    return EmailRenderer()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("fmt", ["html", "text"])
def test_a_marker_in_any_field_is_text_in_email(renderer, form, fmt):
    first = reader(id=1, name="First Reader", format=fmt, analysts=frozenset({"a-b"}))
    second = reader(id=2, name=f"Second {form}", format=fmt, address="second@example.org",
                    analysts=frozenset({"a-b"}))
    shared = renderer.shared(digest.build_digest(first, "k", [sitrep_holding(form)]))
    for r in (first, second):
        personal = personal_for(r)
        alone = renderer.render(digest.build_digest(r, "k", [sitrep_holding(form)]), personal)
        grouped = renderer.personalise(shared, personal)
        assert grouped.as_content() == alone  # the sender's path is the same as rendering alone
        # Every occurrence is there as written; the reader's link appears only where the template puts it.
        assert alone.text.count(form) >= 7
        assert alone.text.count(personal.unsubscribe_url) == 1
        if fmt == "html":
            assert alone.html.count(form) >= 7
            assert alone.html.count(personal.unsubscribe_url) == 1
        for eight_bit in (True, False):
            kwargs = dict(sender="Dispatch <news@example.org>", to=r.address, msg_id=MSG_ID,
                          list_id="<briefings.example.org>", unsubscribe_mailto="news@example.org", date=NOW,
                          eight_bit=eight_bit)
            raw = mime.build_message(grouped, **kwargs)
            assert raw == mime.build_message(alone, **kwargs)
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            if fmt == "html":  # the parts are the two the message was built with, whatever the text
                assert [p.get_content_type() for p in msg.get_payload()] == ["text/plain", "text/html"]
                text = msg.get_payload()[0].get_content()
            else:
                text = msg.get_content()
            assert text.replace("\r\n", "\n") == alone.text.replace("\r\n", "\n")


@pytest.mark.parametrize("form", FORMS)
def test_a_marker_in_any_field_is_text_in_slack(form):
    r = reader(kind="slack", address="C0123ABCD", analysts=frozenset({"a-b"}))
    messages = SlackRenderer().render(digest.build_digest(r, "k", [sitrep_holding(form)])).messages
    payload = json.dumps([[m.text, m.blocks] for m in messages], ensure_ascii=False)
    # Slack text is escaped (& < >); the forms hold none of those but "{% raw %}".
    assert payload.count(form) >= 7
