"""Every signed link is bounded before any work: a token longer than any
link of ours is refused unread (no base64 decoding, no HMAC over it)."""

from __future__ import annotations

import pytest

from dispatch import links


@pytest.mark.parametrize("purpose", sorted(links.MAX_AGE))
def test_an_overlong_timestamped_token_is_refused_unread(monkeypatch, purpose):
    good = links.make_token("k", subscriber_id=1, address="a@example.org", purpose=purpose)
    assert len(good) <= links.MAX_TOKEN and links.read_token("k", good, purpose=purpose).subscriber_id == 1
    signed = []
    real = links._signer
    monkeypatch.setattr(links, "_signer", lambda *a: signed.append(a) or real(*a))
    with pytest.raises(links.TokenError):
        links.read_token("k", good + "A" * 1_000_000, purpose=purpose)
    assert signed == []
