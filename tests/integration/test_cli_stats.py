"""``cachewise stats``: a shared write-back's backlog in Redis, a PostgreSQL's connections.

Each number the command prints is checked against what the test made happen: keys
written and not flushed, claims held by a flusher paused mid-batch, connections held
open under a unique application name. The live view is run in a subprocess at 80
columns, with a password in the URL that must never be printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import Cache, MappingSource, RedisStore, WriteBack
from cachewise._types import Key
from cachewise.cli import main
from cachewise.writeback import shared
from tests.conftest import DEFAULT_POSTGRES, need_server

QUIET: dict[str, Any] = {"flush_interval": 3600.0, "max_batch": 1000}


@pytest.fixture
def direct_postgres() -> str:
    """PostgreSQL itself, never through PgBouncer: the server's own view is what is shown."""
    return need_server("PostgreSQL", "DATABASE_URL", DEFAULT_POSTGRES)


def _stats(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["stats", *argv, "--json"]) == 0
    parsed: dict[str, Any] = json.loads(capsys.readouterr().out)
    return parsed


def test_the_backlog_and_the_claims_of_a_shared_write_back(
    redis_url: str, redis_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = redis_namespace
    source = MappingSource({})
    store = RedisStore(redis_url, namespace=namespace)
    cache = Cache(store, source, write=WriteBack(journal="redis", **QUIET))
    try:
        assert _stats(capsys, "--redis", redis_url, "--namespace", namespace)["write_back"] == {
            "redis": redis_url,
            "namespace": namespace,
            "dirty": 0,
            "oldest_dirty_age": 0.0,
            "claimed": 0,
            "sampled": 0,
        }
        cache.write_many({i: {"id": i} for i in range(5)})
        seen = _stats(capsys, "--redis", redis_url, "--namespace", namespace)["write_back"]
        assert seen["dirty"] == cache.stats.dirty == 5
        assert seen["oldest_dirty_age"] > 0.0
        assert seen["claimed"] == 0

        # A flusher paused after claiming its batch: the claims show, the keys stay dirty.
        claimed, release = threading.Event(), threading.Event()

        def pause(point: str, keys: list[Key]) -> None:
            if point == "claimed":
                claimed.set()
                release.wait(60)

        shared.fault_hook = pause
        flusher = threading.Thread(target=cache.flush)
        flusher.start()
        try:
            assert claimed.wait(60)
            seen = _stats(capsys, "--redis", redis_url, "--namespace", namespace)["write_back"]
            assert (seen["dirty"], seen["claimed"], seen["sampled"]) == (5, 5, 5)
        finally:
            release.set()
            flusher.join(60)
            shared.fault_hook = None
        seen = _stats(capsys, "--redis", redis_url, "--namespace", namespace)["write_back"]
        assert (seen["dirty"], seen["claimed"]) == (0, 0)
        assert len(source.data) == 5
    finally:
        shared.fault_hook = None
        cache.close()


@pytest.mark.postgres
def test_connections_held_open_are_counted_by_state_and_application(
    direct_postgres: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(direct_postgres, connect_args={"application_name": unique_name})
    held = [engine.connect() for _ in range(3)]
    try:
        for conn in held:  # a statement opens the transaction: idle in transaction
            conn.execute(sa.text("SELECT 1"))
        seen = _stats(capsys, direct_postgres)["connections"]
        assert seen["by_application"][unique_name] == 3
        assert seen["idle_in_transaction"] >= 3
        assert seen["total"] >= 3
        assert seen["max_connections"] > 0
    finally:
        for conn in held:
            conn.close()
        engine.dispose()
    seen = _stats(capsys, direct_postgres)["connections"]
    assert unique_name not in seen["by_application"]


@pytest.mark.postgres
def test_the_live_view_fits_80_columns_and_hides_passwords(
    direct_postgres: str, redis_url: str, redis_namespace: str
) -> None:
    namespace = redis_namespace
    url = direct_postgres.replace("://root@", "://root:sekret@", 1)
    if "sekret" not in url:
        pytest.skip("the PostgreSQL URL has no user 'root' to give a password to")
    out = subprocess.run(
        [sys.executable, "-m", "cachewise", "stats", url, "--redis", redis_url,
         "--namespace", namespace, "--count", "2", "--interval", "0.1"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "80", "TERM": "dumb"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "sekret" not in out.stdout + out.stderr
    assert "root:***@" in out.stdout
    assert "dirty keys (backlog)" in out.stdout
    assert "idle in transaction" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give a database URL, --redis URL, or both"),
        (["sqlite:///nothing.db"], "SQLite has no server"),
        (["--redis", "redis://127.0.0.1:6379/0", "--interval", "0"], "--interval"),
        (["postgresql+psycopg://root:sekret@127.0.0.1:1/test", "--json"], "cachewise stats: "),
    ],
)
def test_bad_arguments_and_unreachable_servers_are_one_line_without_secrets(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "sekret" not in err
