"""The log of a PostgreSQL outage under write-back: one warning, quiet retries, one summary.

Our own PostgreSQL is stopped while a write-back cache keeps writing, then started
again. The background flusher fails many times; the log must say so once (a WARNING
with the traceback and structured fields), keep the retries at DEBUG, and say once,
at INFO, that it recovered, after how many attempts and how long, with the last error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from cachewise import Cache, MemoryStore, Retry, SQLSource, WriteBack
from tests.helpers import events, wait_for
from tests.servers import PostgresServer, need_pg_bin

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    need_pg_bin()
    pg = PostgresServer()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


def test_an_outage_is_logged_once_and_its_recovery_summarised(
    server: PostgresServer, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine(server.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {unique_name} (id integer PRIMARY KEY, v text)"))
    engine.dispose()
    caplog.set_level(logging.DEBUG, logger="cachewise")
    policy = WriteBack(flush_interval=0.05, retry=Retry(initial=0.05, maximum=0.2))
    source = SQLSource(server.url, table=unique_name, key="id")
    cache = Cache(MemoryStore(), source, write=policy, name=unique_name)
    try:
        cache.write(1, {"id": 1, "v": "before"})
        assert wait_for(lambda: cache.stats.dirty == 0)

        server.stop()
        for i in range(2, 12):
            cache.write(i, {"id": i, "v": "during"})
        assert wait_for(lambda: cache.stats.flush_failures >= 4)
        failed = events(caplog, "flush_failed")
        assert len(failed) == 1
        first = failed[0]
        assert first.levelno == logging.WARNING
        assert first.name == "cachewise.writeback"
        assert first.exc_info  # one traceback for the outage
        assert first.cache == unique_name  # type: ignore[attr-defined]
        assert first.attempt == 1  # type: ignore[attr-defined]
        assert first.keys == 10  # type: ignore[attr-defined]
        assert first.error == "OperationalError"  # type: ignore[attr-defined]
        retries = events(caplog, "flush_retry_failed")
        assert len(retries) >= 3
        assert [(r.levelno, bool(r.exc_info)) for r in retries] == [(logging.DEBUG, False)] * len(
            retries
        )
        assert [r.attempt for r in retries] == list(range(2, len(retries) + 2))  # type: ignore[attr-defined]
        assert events(caplog, "flush_recovered") == []

        server.start()
        assert wait_for(lambda: cache.stats.dirty == 0)
        assert wait_for(lambda: len(events(caplog, "flush_recovered")) == 1)
        recovered = events(caplog, "flush_recovered")[0]
        assert recovered.levelno == logging.INFO
        attempts = recovered.attempts  # type: ignore[attr-defined]
        assert attempts == 1 + len(events(caplog, "flush_retry_failed"))
        assert recovered.keys == 10  # type: ignore[attr-defined]
        assert recovered.error == "OperationalError"  # type: ignore[attr-defined]
        assert recovered.seconds > 0  # type: ignore[attr-defined]
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == [first]
    finally:
        cache.close()
    assert len(events(caplog, "flush_failed")) == 1
