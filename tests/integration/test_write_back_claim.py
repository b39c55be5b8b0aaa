"""One in-process write-back per Redis namespace, checked across real processes (issue 11 #13).

Two processes each with their own ``WriteBack`` on one ``RedisStore`` namespace used to
end with the source holding one write and Redis another, for good: each flushes its own
dirty set, in no order with the other's. That combination is now refused with a
``ConfigurationError`` pointing at the shared write-back (``journal="redis"``), which
any number of processes may use together.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import cachewise._logic
from cachewise import Cache, MappingSource, RedisStore, TieredStore, WriteBack
from cachewise.errors import ConfigurationError, StoreError
from cachewise.stores.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from cachewise import Cache, MappingSource, RedisStore, WriteBack
url, namespace, journal = sys.argv[1:4]
policy = WriteBack(flush_interval=3600, journal=journal or None)
cache = Cache(RedisStore(url, namespace=namespace), MappingSource(), write=policy)
print("READY", flush=True)
sys.stdin.readline()
cache.close()
print("CLOSED", flush=True)
"""


@pytest.fixture
def namespace(redis_url: str, unique_name: str) -> Iterator[str]:
    yield unique_name
    raw = redis.Redis.from_url(redis_url)
    for wire in raw.scan_iter(match=unique_name + ":*", count=1000):
        raw.unlink(wire)
    raw.close()


@pytest.fixture
def holder(redis_url: str, namespace: str) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start a process holding a write-back cache on the namespace until told to close."""
    started: list[subprocess.Popen[str]] = []

    def start(journal: str = "") -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, redis_url, namespace, journal],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(child)
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == "READY", (line, child.stderr.read() if child.stderr else "")
        return child

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=60)


def _refused_in_another_process(url: str, namespace: str) -> None:
    """A process that opens an in-process write-back on the namespace is refused."""
    refused = subprocess.run(
        [sys.executable, "-c", HOLDER, url, namespace, ""],
        cwd=ROOT,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "ConfigurationError" in refused.stderr
    assert "journal='redis'" in refused.stderr


def _cache(url: str, namespace: str, journal: str | None = None) -> Cache:
    policy = WriteBack(flush_interval=3600, journal=journal)
    return Cache(RedisStore(url, namespace=namespace), MappingSource(), write=policy)


def test_a_second_in_process_write_back_on_the_namespace_is_refused(
    redis_url: str, namespace: str, holder: Callable[[str], subprocess.Popen[str]]
) -> None:
    first = holder("")
    with pytest.raises(ConfigurationError, match=r"journal='redis'") as refused:
        _cache(redis_url, namespace)
    assert f":{first.pid}:" in str(refused.value)  # it names the process in the way
    with pytest.raises(ConfigurationError):  # a shared one cannot join a solo one either
        _cache(redis_url, namespace, journal="redis")
    with pytest.raises(ConfigurationError):  # nor a TieredStore over the same namespace
        Cache(
            TieredStore(MemoryStore(), RedisStore(redis_url, namespace=namespace)),
            MappingSource(),
            write=WriteBack(flush_interval=3600),
        )
    assert first.stdin is not None
    assert first.stdout is not None
    first.stdin.write("close\n")
    first.stdin.flush()
    assert first.stdout.readline().strip() == "CLOSED"
    second = _cache(redis_url, namespace)  # closed: the namespace is free again
    second.write("k", {"v": 1})
    second.close()


def test_the_claim_of_a_killed_process_is_taken_over_at_once_on_the_same_host(
    redis_url: str, namespace: str, holder: Callable[[str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    first = holder(str(tmp_path / "journal"))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    # Its claim has not lapsed yet (10 s), but its pid is gone: a restart need not wait.
    again = _cache(redis_url, namespace, journal=str(tmp_path / "journal"))
    again.write("k", {"v": 1})
    again.close()


def test_shared_write_backs_join_each_other_and_exclude_an_in_process_one(
    redis_url: str, namespace: str, holder: Callable[[str], subprocess.Popen[str]]
) -> None:
    shared = _cache(redis_url, namespace, journal="redis")
    try:
        another = _cache(redis_url, namespace, journal="redis")  # as a second process would
        another.close()
        _refused_in_another_process(redis_url, namespace)
    finally:
        shared.close()


def test_a_lapsed_claim_taken_by_another_process_refuses_further_writes(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cachewise._logic, "CLAIM_TTL", 0.6)  # renewed every 0.2 s
    cache = _cache(redis_url, namespace)
    try:
        cache.write("a", {"v": 1})
        raw = redis.Redis.from_url(redis_url)
        # What a process paused past its TTL would find: someone else holds the claim.
        raw.set(f"{namespace}:{{~writeback}}:owner", "elsewhere:1:beef", px=60_000)
        raw.close()
        deadline = time.monotonic() + 30
        while not (cache._claim is not None and cache._claim.lost):
            assert time.monotonic() < deadline, "the renewal never noticed"
            time.sleep(0.05)
        with pytest.raises(StoreError, match="took over"):
            cache.write("b", {"v": 2})
        with pytest.raises(StoreError):
            cache.delete("a")
    finally:
        cache.close()


def test_caches_of_one_process_share_its_claim_until_the_last_closes(
    redis_url: str, namespace: str
) -> None:
    """The claim arbitrates between processes: one process may run a cache per table."""
    first = _cache(redis_url, namespace)
    second = _cache(redis_url, namespace)  # same process: shares the claim
    _refused_in_another_process(redis_url, namespace)  # another process still may not
    first.close()
    raw = redis.Redis.from_url(redis_url)
    try:
        owner = f"{namespace}:{{~writeback}}:owner"
        assert raw.exists(owner) == 1  # the second cache still holds it
        second.close()
        assert raw.exists(owner) == 0  # the last one released it
    finally:
        raw.close()
