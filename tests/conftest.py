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
from collections.abc import Iterator
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


def need_server(kind: str, env: str, default: str) -> str:
    """Return the URL of a reachable server, or skip (fail under CI) with one line why."""
    url = os.environ.get(env) or default
    if _reachable(url):
        return url
    reason = f"{kind} not reachable at {urlsplit(url).hostname}:{urlsplit(url).port} (set {env})"
    if IN_CI:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


VIA_PGBOUNCER = os.environ.get("CACHEWISE_VIA_PGBOUNCER", "").lower() in {"1", "true", "yes"}
"""Run the PostgreSQL suite through a PgBouncer in transaction mode (issue 6)."""


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    if VIA_PGBOUNCER:
        return str(request.getfixturevalue("pgbouncer_url"))
    return need_server("PostgreSQL", "DATABASE_URL", DEFAULT_POSTGRES)


@pytest.fixture(scope="session")
def pgbouncer_url() -> Iterator[str]:
    """A URL through our own PgBouncer (transaction mode) in front of the PostgreSQL server.

    Its ``?pgbouncer=true&direct=HOST:PORT`` options are for ``cachewise.connect()``:
    no server-side prepared statements, and session features go to PostgreSQL directly.
    """
    from cachewise._pgbouncer import PgBouncer

    direct = urlsplit(need_server("PostgreSQL", "DATABASE_URL", DEFAULT_POSTGRES))
    try:
        bouncer = PgBouncer(direct.hostname or "127.0.0.1", direct.port or 5432)
        bouncer.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        reason = f"cannot start pgbouncer: {err}"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    database = direct.path.lstrip("/") or "test"
    user = direct.username or "root"
    through = bouncer.url(database, user)
    if direct.password:  # PgBouncer trusts; the direct connection may need it
        through = through.replace(f"//{user}@", f"//{user}:{direct.password}@", 1)
    where = f"{direct.hostname or '127.0.0.1'}:{direct.port or 5432}"
    try:
        yield f"{through}?pgbouncer=true&direct={where}"
    finally:
        bouncer.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return need_server("Redis", "REDIS_URL", DEFAULT_REDIS)


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


_SERVER_FIXTURES = {"postgres_url": "postgres", "redis_url": "redis", "mysql_url": "mysql"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the servers its fixtures need, so ``-m postgres`` selects them."""
    for item in items:
        for fixture, marker in _SERVER_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


_skipped_server_tests: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember server tests that skipped: under CI that is a failure, not a pass."""
    if report.skipped and any(m in report.keywords for m in ("postgres", "redis")):
        _skipped_server_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped_server_tests:
        shown = "\n  ".join(_skipped_server_tests[:20])
        print(
            f"\nCI=true but {len(_skipped_server_tests)} Redis/PostgreSQL tests skipped:\n  {shown}"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio: cachewise.aio is for asyncio."""
    return "asyncio"
