"""Many real processes on one Redis: the source is loaded once per expiry (no stampede)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw(redis_url: str, unique_name: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for wire in client.scan_iter(match=unique_name + ":*", count=1000):
        client.unlink(wire)
    client.close()


def wait_count(raw: redis.Redis, key: str, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while int(raw.get(key) or 0) < n:
        assert time.monotonic() < deadline, f"{key} stuck below {n}"
        time.sleep(0.01)


def test_8_processes_x_16_threads_load_the_source_once_per_expiry(
    redis_url: str, unique_name: str, raw: redis.Redis
) -> None:
    processes, threads, rounds = 8, 16, 2
    argv = [sys.executable, "-m", "tests.integration._redis_worker", "stampede"]
    argv += [redis_url, unique_name, str(threads), str(rounds)]
    procs = [subprocess.Popen(argv, cwd=ROOT) for _ in range(processes)]
    try:
        value_key = f"{unique_name}:{{shot}}:v"
        for round_ in range(rounds):
            wait_count(raw, f"{unique_name}:ready", processes * (round_ + 1))
            if round_:
                # Wait for the entry to expire (RedisStore ttl=1): the next miss reloads.
                deadline = time.monotonic() + 10
                while raw.exists(value_key):
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            raw.set(f"{unique_name}:go:{round_}", 1)
            wait_count(raw, f"{unique_name}:done", processes * (round_ + 1))
            assert int(raw.get(f"{unique_name}:loads") or 0) == round_ + 1
        for proc in procs:
            assert proc.wait(60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
