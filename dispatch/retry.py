"""How long to wait before trying a delivery again. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, honouring Retry-After.

    Attempt n (1-based) waits a random time in [base·2^(n-1)/2, base·2^(n-1)],
    at most ``cap``; a server's Retry-After is a floor. After ``max_attempts``
    attempts the delivery fails for good.
    """

    max_attempts: int = 8
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=2)

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError("need 0 < base <= cap")

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay(self, attempts: int, *, retry_after: float | None = None, rng: random.Random | None = None) -> timedelta:
        ceiling = min(self.cap, self.base * (2 ** max(0, attempts - 1)))
        jittered = ceiling * (0.5 + 0.5 * (rng or random).random())
        floor = timedelta(seconds=retry_after) if retry_after else timedelta(0)
        return max(jittered, floor)
