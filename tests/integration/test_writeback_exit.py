"""Write-back flushes at interpreter exit, in a real child process writing to SQLite."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

CHILD = textwrap.dedent(
    """
    import sys
    import sqlalchemy as sa
    from cachewise import Cache, MemoryStore, SQLSource, WriteBack

    url = sys.argv[1]
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    sa.Table("counters", meta, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("hits", sa.Integer))
    meta.create_all(engine)
    cache = Cache(MemoryStore(), SQLSource(engine, table="counters"),
                  write=WriteBack(flush_interval=3600))
    for n in range(500):
        cache.write(n % 50, {"id": n % 50, "hits": n})
    assert cache.stats.dirty == 50
    # no flush(), no close(): the interpreter exits with 50 dirty keys
    """
)


def test_dirty_keys_are_flushed_when_the_interpreter_exits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows: dict[int, int] = dict(conn.execute(sa.text("SELECT id, hits FROM counters")).all())
    engine.dispose()
    assert rows == {k: 450 + k for k in range(50)}
