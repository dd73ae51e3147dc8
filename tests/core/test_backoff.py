import random

import pytest

from collector.core.backoff import Backoff, TokenBucket, acquire_wait


def test_backoff_full_jitter_is_capped_and_grows():
    b = Backoff(0.5, 30, random.Random(1))
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    maxima = [0.0] * len(ceilings)
    for _ in range(200):
        b.reset()
        for i, ceiling in enumerate(ceilings):
            d = b.next_delay()
            assert 0 <= d <= ceiling
            maxima[i] = max(maxima[i], d)
    # full jitter spreads over the whole range: the draws reach near each ceiling
    for got, ceiling in zip(maxima, ceilings):
        assert got > 0.9 * ceiling


def test_backoff_reset_starts_small_again():
    b = Backoff(1, 100, random.Random(2))
    for _ in range(10):
        b.next_delay()
    b.reset()
    assert b.next_delay() <= 1


def test_backoff_survives_many_failures():
    b = Backoff(0.5, 30, random.Random(3))
    for _ in range(10_000):
        assert b.next_delay() <= 30


def test_token_bucket_burst_then_rate():
    t = 0.0
    bucket = TokenBucket(capacity=5, per_minute=1, now=t)
    for _ in range(5):
        assert acquire_wait([bucket], t) == 0
    wait = acquire_wait([bucket], t)
    assert wait == pytest.approx(60)
    assert acquire_wait([bucket], t + 59) == pytest.approx(1)
    assert acquire_wait([bucket], t + 60) == 0
    assert acquire_wait([bucket], t + 60) == pytest.approx(60)


def test_token_bucket_never_exceeds_capacity():
    bucket = TokenBucket(capacity=2, per_minute=60, now=0)
    assert acquire_wait([bucket], 1000) == 0
    assert acquire_wait([bucket], 1000) == 0
    assert acquire_wait([bucket], 1000) == pytest.approx(1)


def test_all_buckets_or_none():
    own = TokenBucket(capacity=5, per_minute=1, now=0)
    shared = TokenBucket(capacity=1, per_minute=60, now=0)
    assert acquire_wait([own, shared], 0) == 0
    # shared is empty: nothing is taken from `own`
    assert acquire_wait([own, shared], 0) == pytest.approx(1)
    assert own.tokens == pytest.approx(4)
    assert acquire_wait([own, shared], 1) == 0
    assert own.tokens == pytest.approx(3, abs=0.02)


def test_storm_of_100_symbols_is_paced_by_the_shared_budget():
    shared = TokenBucket(capacity=60, per_minute=60, now=0)
    owns = [TokenBucket(5, 1, now=0) for _ in range(100)]
    granted = sum(1 for own in owns if acquire_wait([own, shared], 0) == 0)
    assert granted == 60
