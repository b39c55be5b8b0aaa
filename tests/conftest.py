"""Fixtures for real servers: env var, else the local default, else skip (never in CI).

``REDIS_URL``, ``DATABASE_URL`` (PostgreSQL) and ``MYSQL_URL`` override the local
defaults. Under ``CI=true`` an unreachable server fails the test instead of skipping it,
so a green CI run always means the Redis and PostgreSQL suites ran.
"""

from __future__ import annotations

import os
import socket
import uuid
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


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return need_server("PostgreSQL", "DATABASE_URL", DEFAULT_POSTGRES)


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
