import random
from datetime import timedelta

import pytest

from dispatch.retry import RetryPolicy


def test_delays_grow_exponentially_within_jitter_and_cap():
    policy = RetryPolicy(max_attempts=10, base=timedelta(seconds=10), cap=timedelta(minutes=5))
    rng = random.Random(7)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (6, 300), (9, 300)]:
        delays = [policy.delay(attempt, rng=rng).total_seconds() for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 10  # jitter spreads retries out


def test_retry_after_is_a_floor():
    policy = RetryPolicy(base=timedelta(seconds=1))
    assert policy.delay(1, retry_after=120, rng=random.Random(1)) == timedelta(seconds=120)


def test_exhausted():
    policy = RetryPolicy(max_attempts=3)
    assert not policy.exhausted(2) and policy.exhausted(3)


@pytest.mark.parametrize("kwargs", [dict(max_attempts=0), dict(base=timedelta(0)),
                                    dict(base=timedelta(hours=3), cap=timedelta(hours=1))])
def test_policy_validates_itself(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
