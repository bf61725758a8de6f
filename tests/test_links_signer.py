"""links' own signer against itsdangerous, and the keyed HMACs against hmac: the same bytes,
for any secret, reader, purpose and moment, and read back by both."""

import base64
import hashlib
import hmac
import string

from hypothesis import given, settings as hsettings
from hypothesis import strategies as st
from itsdangerous import Signer, TimestampSigner

from dispatch import links, mime

secrets_ = st.text(min_size=1, max_size=80)  # any text, long ones too (a key longer than sha1's block)
moments = st.integers(min_value=0, max_value=2**37)  # up to the year 6325: datetime stops at 9999
ascii_values = st.text(alphabet=string.ascii_letters + string.digits + "-_:", min_size=0, max_size=120)


@hsettings(max_examples=200, deadline=None)
@given(secret=secrets_, subscriber_id=st.integers(min_value=0, max_value=2**63), address=st.emails(),
       purpose=st.sampled_from(sorted(links.MAX_AGE)), issued=moments)
def test_timestamped_tokens_are_itsdangerous_tokens(secret, subscriber_id, address, purpose, issued):
    ours = links.make_token(secret, subscriber_id=subscriber_id, address=address, purpose=purpose, now=issued)
    reference = TimestampSigner(secret, salt=f"dispatch-subscriber-{purpose}")
    reference.get_timestamp = lambda: issued
    value = f"{subscriber_id}-{links.address_tag(address)}"
    assert ours == reference.sign(value).decode("ascii")
    assert reference.unsign(ours) == value.encode("ascii")
    claims = links.read_token(secret, ours, purpose=purpose, now=issued)
    assert (claims.subscriber_id, claims.is_for(address)) == (subscriber_id, True)


@hsettings(max_examples=200, deadline=None)
@given(secret=secrets_, value=ascii_values, purpose=st.sampled_from(links.STATIC_PURPOSES))
def test_static_tokens_are_itsdangerous_tokens(secret, value, purpose):
    ours = links.sign_static(secret, value, purpose=purpose)
    assert ours == Signer(secret, salt=f"dispatch-static-{purpose}").sign(value).decode("ascii")
    assert links.read_static(secret, ours, purpose=purpose) == value


def test_links_made_in_the_same_second_share_the_timestamp_and_differ_by_reader():
    first = links.make_token("k", subscriber_id=1, address="a@example.org", purpose="preferences", now=1_800_000_000.9)
    second = links.make_token("k", subscriber_id=2, address="a@example.org", purpose="preferences", now=1_800_000_000)
    assert first.split(".")[1] == second.split(".")[1]
    assert first.split(".")[2] != second.split(".")[2]


@hsettings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=200), message=st.binary(max_size=300), name=st.sampled_from(["sha1", "sha256"]))
def test_keyed_hmac_is_hmac(key, message, name):
    mac = links.KeyedHmac(key, getattr(hashlib, name))
    assert mac.digest(message) == hmac.digest(key, message, name)
    assert mac.digest(message) == mac.digest(message)  # the keyed states are copied, never used up


@hsettings(max_examples=200, deadline=None)
@given(installation=st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=32),
       delivery_id=st.integers(min_value=0, max_value=2**63))
def test_message_id_tags_are_base32_of_the_hmac(installation, delivery_id):
    reference = hmac.digest(installation.encode("ascii"), b"dispatch message-id %d" % delivery_id, "sha256")
    assert mime.delivery_tag(installation, delivery_id) == base64.b32encode(reference[:10]).decode("ascii").lower()
