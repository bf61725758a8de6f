"""ASGI middleware that every request passes, before any route sees it:
request bodies capped while they stream in, and the security headers of
every response.

Both are plain ASGI (no BaseHTTPMiddleware): the body cap must sit on the
``receive`` channel itself, where a chunked body without Content-Length
arrives, or Starlette's form parser would buffer it whole first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from html import escape

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_TIMEOUT_SECONDS = 60.0  # a body that trickles in slower than this is a slow-loris, not a client


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses with 413 any request body larger than ``await limit_for(scope)``
    bytes: at once when Content-Length says so, else the moment the
    streamed chunks (``Transfer-Encoding: chunked`` included) add up past
    it; nothing beyond the limit is ever held in memory. A body that takes
    longer than ``BODY_TIMEOUT_SECONDS`` to arrive gets 408."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[Scope], Awaitable[int]],
                 timeout: float = BODY_TIMEOUT_SECONDS):
        self.app = app
        self.limit_for = limit_for
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = await self.limit_for(scope)
        length = _header(scope, b"content-length")
        if length is not None:
            # ASCII digits only ("²".isdigit() is true and int() refuses it), and no
            # longer than any real length: int() of 5,000 digits raises as well.
            if not (length.isascii() and length.isdigit() and len(length) <= 18):
                await _refuse(send, path, 400, "The Content-Length header is not a number.")
                return
            if int(length) > limit:
                await _refuse(send, path, 413, _too_large(limit))
                return
        received = 0
        refused: list[tuple[int, str]] = []  # set once the body broke a rule
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                refused.append((408, "The request body took too long to arrive."))
                raise _BodyTooLarge() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused.append((413, _too_large(limit)))
                    raise _BodyTooLarge()
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                # The app turned our refusal into an answer of its own (FastAPI
                # makes a 400 of any error while parsing a form): say what happened instead.
                if not started and message["type"] == "http.response.start":
                    started = True
                    await _refuse(send, path, *refused[0])
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _refuse(send, path, *refused[0])


def _too_large(limit: int) -> str:
    size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"
    return f"The request is larger than {size}, the most this address accepts."


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1").strip()
    return None


async def _refuse(send: Send, path: str, status: int, text: str) -> None:
    if path.startswith("/api/"):
        body, kind = json.dumps({"detail": text}).encode(), b"application/json"
    else:
        body = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Refused</title></head>"
                f"<body><h1>The request was refused</h1><p>{escape(text)}</p></body></html>").encode()
        kind = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *_security_headers(path)]})
    await send({"type": "http.response.body", "body": body})


# Pages have no scripts and no external assets; their styles are inline.
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
# FastAPI's Swagger page loads its script and styles from a CDN and starts them inline.
DOCS_POLICY = ("default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
               "style-src 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
DOCS_PATH = "/api/docs"


def _security_headers(path: str) -> list[tuple[bytes, bytes]]:
    policy = DOCS_POLICY if path == DOCS_PATH else PAGE_POLICY
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        # Reader pages carry signed tokens in their URLs: never hand them on.
        (b"referrer-policy", b"no-referrer"),
        # Admin pages, token pages, forms with CSRF tokens and API answers are
        # all personal; nothing here is worth a shared cache's copy.
        (b"cache-control", b"no-store"),
    ]


class SecurityHeaders:
    """Adds the security headers to every response (a header the route set itself is kept)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _security_headers(scope["path"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", ())}
                message["headers"] = [*message.get("headers", ()), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)
