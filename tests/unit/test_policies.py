"""Policy objects validate their arguments before anything is built."""

from __future__ import annotations

import random

import pytest

from cachewise import CacheAside, ReadThrough, Retry, WriteAround, WriteBack
from cachewise.errors import ConfigurationError


@pytest.mark.parametrize(
    "make",
    [
        lambda: WriteBack(flush_interval=0),
        lambda: WriteBack(flush_interval=-1),
        lambda: WriteBack(max_batch=0),
        lambda: WriteBack(max_dirty=-5),
        lambda: WriteBack(fsync="sometimes"),  # type: ignore[arg-type]
        lambda: WriteBack(on_full="drop"),  # type: ignore[arg-type]
        lambda: WriteBack(journal=42),  # type: ignore[arg-type]
        lambda: WriteBack(retry="fast"),  # type: ignore[arg-type]
        lambda: Retry(initial=0),
        lambda: Retry(multiplier=0.5),
        lambda: Retry(jitter=2),
        lambda: ReadThrough(ttl=-1),
        lambda: CacheAside(ttl=0),
        lambda: WriteAround(invalidate="yes"),  # type: ignore[arg-type]
    ],
)
def test_bad_policy_arguments_raise(make: object) -> None:
    with pytest.raises(ConfigurationError):
        make()  # type: ignore[operator]


def test_retry_backs_off_exponentially_with_bounded_jitter() -> None:
    retry = Retry(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(1)
    delays = [retry.delay(n, rng) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        base = min(1.0, 0.1 * 2 ** (n - 1))
        assert base * 0.5 <= delay <= base
    assert max(delays) <= 1.0
