"""Fixtures for real servers: env var, else the local default, else skip (never in CI).

``REDIS_URL``, ``DATABASE_URL`` (PostgreSQL) and ``MYSQL_URL`` override the local
defaults. Under ``CI=true`` an unreachable server fails the test instead of skipping it,
so a green CI run always means the Redis and PostgreSQL suites ran.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port
    if port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def cannot_run(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail under CI=true (a green CI means every suite ran)."""
    if IN_CI:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def need_server(kind: str, env: str, default: str) -> str:
    """Return the URL of a reachable server, or skip (fail under CI) with one line why."""
    url = os.environ.get(env) or default
    if _reachable(url):
        return url
    cannot_run(f"{kind} not reachable at {urlsplit(url).hostname}:{urlsplit(url).port} (set {env})")


VIA_PGBOUNCER = os.environ.get("CACHEWISE_VIA_PGBOUNCER", "").lower() in {"1", "true", "yes"}
"""Run the PostgreSQL suite through a PgBouncer in transaction mode (issue 6)."""


VIA_PGPOOL = os.environ.get("CACHEWISE_VIA_PGPOOL", "").lower() in {"1", "true", "yes"}
"""Run the PostgreSQL suite through a Pgpool-II in connection-pooling mode (issue 14)."""


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    if VIA_PGBOUNCER:
        return str(request.getfixturevalue("pgbouncer_url"))
    if VIA_PGPOOL:
        return str(request.getfixturevalue("pgpool_url"))
    return need_server("PostgreSQL", "DATABASE_URL", DEFAULT_POSTGRES)


def _through_pooler(name: str, make: Callable[[str, int], Any], mode: str) -> Iterator[str]:
    """A URL through a pooler of our own in front of the PostgreSQL server, then stop it.

    ``?<mode>=true`` tells ``cachewise.connect()`` which pooler it is behind;
    ``?direct=HOST:PORT`` where PostgreSQL itself is (session features, and tools that
    start poolers of their own, go there instead of stacking poolers).
    """
    direct = urlsplit(need_server("PostgreSQL", "DATABASE_URL", DEFAULT_POSTGRES))
    host, port = direct.hostname or "127.0.0.1", direct.port or 5432
    try:
        pooler = make(host, port)
        pooler.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        cannot_run(f"cannot start {name}: {err}")
    user = direct.username or "root"
    through = pooler.url(direct.path.lstrip("/") or "test", user)
    if direct.password:  # the pooler trusts or passes it on; PostgreSQL may need it
        through = through.replace(f"//{user}@", f"//{user}:{direct.password}@", 1)
    try:
        yield f"{through}?{mode}=true&direct={host}:{port}"
    finally:
        pooler.close()


@pytest.fixture(scope="session")
def pgpool_url() -> Iterator[str]:
    """A URL through our own Pgpool-II (connection pooling, raw mode): ``?pgpool=true``.

    In that mode ``cachewise.connect()`` keeps reads from being load balanced away from a
    write just made.
    """
    from cachewise._pgpool import Pgpool

    # Every child keeps a server connection of its own once it has served a client, so
    # the workers' Pgpool-IIs together must leave room under PostgreSQL's max_connections
    # (100 by default) for the direct connections of the same tests.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    children = max(8, 40 // workers)
    yield from _through_pooler(
        "pgpool", lambda h, p: Pgpool(((h, p, 1),), children=children), "pgpool"
    )


@pytest.fixture(scope="session")
def pgbouncer_url() -> Iterator[str]:
    """A URL through our own PgBouncer (transaction mode): ``?pgbouncer=true``.

    In that mode ``cachewise.connect()`` uses no server-side prepared statements, and
    session features go to PostgreSQL directly.
    """
    from cachewise._pgbouncer import PgBouncer

    yield from _through_pooler("pgbouncer", PgBouncer, "pgbouncer")


@pytest.fixture(scope="session")
def memcached_url() -> Iterator[str]:
    """A memcached of our own for the session (``MEMCACHED_URL`` uses yours instead)."""
    given = os.environ.get("MEMCACHED_URL")
    if given:
        yield need_server("memcached", "MEMCACHED_URL", given)
        return
    from tests.servers import MemcachedServer

    try:
        server = MemcachedServer()
        server.start()
    except (OSError, RuntimeError) as err:
        cannot_run(f"cannot start memcached: {err}")
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return need_server("Redis", "REDIS_URL", DEFAULT_REDIS)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster of our own for the session: 3 primaries + 3 replicas.

    Tests share it: each uses a namespace of its own (``unique_name``).
    """
    from tests.redis_cluster import RedisClusterServers

    try:
        cluster = RedisClusterServers()
        cluster.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        cannot_run(f"cannot start a Redis cluster: {err}")
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return need_server("MariaDB", "MYSQL_URL", DEFAULT_MYSQL)


@pytest.fixture
def unique_name() -> str:
    """A table or namespace name no other test (or test run) uses."""
    return f"cw_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.fspath(tmp_path)}/cachewise-test.db"


_SERVER_FIXTURES = {
    "postgres_url": "postgres",
    "redis_url": "redis",
    "mysql_url": "mysql",
    "memcached_url": "memcached",
    "pgpool_url": "pgpool",
    "redis_cluster_url": "cluster",
}
_MUST_RUN_IN_CI = ("postgres", "redis", "memcached", "pgpool", "cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the servers its fixtures need, so ``-m postgres`` selects them."""
    for item in items:
        for fixture, marker in _SERVER_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


_skipped_server_tests: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember server tests that skipped: under CI that is a failure, not a pass."""
    if report.skipped and any(m in report.keywords for m in _MUST_RUN_IN_CI):
        _skipped_server_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped_server_tests:
        shown = "\n  ".join(_skipped_server_tests[:20])
        print(f"\nCI=true but {len(_skipped_server_tests)} server tests skipped:\n  {shown}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def redis_namespace(unique_name: str, redis_url: str) -> Iterator[str]:
    """A key namespace of this test's own on the shared Redis, its keys deleted after."""
    import redis

    yield unique_name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{unique_name}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio: cachewise.aio is for asyncio."""
    return "asyncio"
