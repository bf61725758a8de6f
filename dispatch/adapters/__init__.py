"""Channels: one small interface, one module per channel.

An adapter takes rendered content and an address, and returns a receipt (a
string the log keeps) or raises TransientError / PermanentError. It knows no
database. Its settings are checked in ``__init__``, so a bad setting fails
at start-up, never in the middle of a send.
"""

from __future__ import annotations

from typing import Protocol


class Channel(Protocol):
    def send(self, address: str, content, *, delivery_id: int, progress: str | None = None) -> str:
        """Deliver ``content`` to ``address``; return the receipt."""

    def close(self) -> None:
        """Release connections."""
