"""The body cap reads Content-Length as the ASCII number it must be: a
value the server's parser let through but int() refuses is a 400, never
an exception in the middleware."""

from __future__ import annotations

import asyncio

import pytest

from dispatch.web.middleware import BodyLimit


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _limit(scope) -> int:
    return 1000


def _status(length: bytes) -> int:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/subscribe", "method": "POST", "headers": [(b"content-length", length)]}
    asyncio.run(BodyLimit(_app, limit_for=_limit)(scope, receive, send))
    return sent[0]["status"]


@pytest.mark.parametrize("length", ["²".encode("latin-1"), b"9" * 5000, "１２".encode("utf-8")])
def test_a_content_length_that_is_no_ascii_number_is_a_400(length):
    assert _status(length) == 400


def test_an_honest_content_length_passes_or_is_too_large():
    assert _status(b"10") == 200
    assert _status(b"100000") == 413
