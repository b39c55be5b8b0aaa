"""The lab's authoritative data source: real tables in SQLite (default) or PostgreSQL.

Every run gets its own uniquely named tables (shared servers stay clean: they are
dropped after the run), with the same columns: key, version, group and payload.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cachewise._types import Key
from cachewise.errors import ConfigurationError
from cachewise.lab.workloads import Op
from cachewise.pool import connect
from cachewise.sources.sql import SQLSource

_PAYLOADS: dict[int, str] = {}


def payload(size: int) -> str:
    """A value body of ``size`` bytes (shared strings: the content is not the point)."""
    text = _PAYLOADS.get(size)
    if text is None:
        text = _PAYLOADS[size] = "x" * size
    return text


def row(op: Op) -> dict[str, Any]:
    """The row a write operation stores: its key, version, group and payload."""
    return {"k": op.key, "v": op.version, "grp": op.group, "payload": payload(op.size)}


@dataclass
class Database:
    """Where runs create their tables: a URL, or a temporary SQLite file."""

    url: str | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cachewise-lab-"))

    def __post_init__(self) -> None:
        if self.url is None:
            self.url = f"sqlite:///{os.path.join(self.workdir, 'lab.db')}"

    @property
    def is_sqlite(self) -> bool:
        """Whether the source is the embedded SQLite file."""
        return str(self.url).startswith("sqlite")

    def engine(self, *, crash: bool = False) -> Engine:
        """A pooled engine (room for concurrent readers in burst workloads).

        ``crash=True``: the database of the crash runs, which happen alongside the
        measured runs; for SQLite that is a second file, so they never wait for each
        other's write lock.
        """
        url = str(self.url)
        if crash and self.is_sqlite:
            url = f"sqlite:///{os.path.join(self.workdir, 'crash.db')}"
        return connect(url, pool_size=20, max_overflow=0)

    def cleanup(self) -> None:
        """Remove the temporary directory (SQLite file, journals)."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def table_names(tables: Iterable[str]) -> dict[str, str]:
    """A unique database table name for each of a workload's tables."""
    run = uuid.uuid4().hex[:10]
    return {t: f"cw_lab_{t}_{run}" for t in tables}


def create_tables(engine: Engine, names: dict[str, str], seed: dict[str, list[Op]]) -> None:
    """Create the run's tables and insert the rows that exist before it starts."""
    meta = sa.MetaData()
    for real in names.values():
        sa.Table(
            real,
            meta,
            sa.Column("k", sa.String(80), primary_key=True),
            sa.Column("v", sa.Integer, nullable=False),
            sa.Column("grp", sa.String(80), nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Index(f"{real}_grp", "grp"),
        )
    meta.create_all(engine)
    with engine.begin() as conn:
        for table, ops in seed.items():
            if ops:
                conn.execute(meta.tables[names[table]].insert(), [row(op) for op in ops])


def drop_tables(engine: Engine, names: dict[str, str]) -> None:
    """Drop the run's tables."""
    meta = sa.MetaData()
    for real in names.values():
        sa.Table(real, meta, sa.Column("k", sa.String(80), primary_key=True))
    meta.drop_all(engine)


class DerivedSource:
    """A value computed by the application from another table: the rows of a group.

    What cache-aside lets an application do with a derived value such as a balance:
    compute it on a miss with one aggregate query instead of storing and updating it.
    Its version is the number of rows in the group (one per transaction).
    """

    def __init__(self, engine: Engine, table: str, prefix: str) -> None:
        self._table = sa.Table(table, sa.MetaData(), autoload_with=engine)
        self._engine = engine
        self._prefix = prefix

    def __repr__(self) -> str:
        return f"DerivedSource({self._table.name!r})"

    def load(self, key: Key) -> Any:
        group = str(key).removeprefix(self._prefix)
        query = sa.select(sa.func.count()).where(self._table.c.grp == group)
        with self._engine.connect() as conn:
            count = int(conn.execute(query).scalar_one())
        return {"k": key, "v": count, "grp": group, "payload": ""}

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        return {key: self.load(key) for key in keys}

    def save(self, key: Key, value: Any) -> None:
        raise ConfigurationError("a derived value is computed, not saved")

    def save_many(self, items: Mapping[Key, Any]) -> None:
        raise ConfigurationError("a derived value is computed, not saved")

    def remove(self, key: Key) -> None:
        raise ConfigurationError("a derived value is computed, not removed")

    def remove_many(self, keys: Iterable[Key]) -> None:
        raise ConfigurationError("a derived value is computed, not removed")


def sources(engine: Engine, names: dict[str, str]) -> dict[str, SQLSource]:
    """One SQLSource per table."""
    return {t: SQLSource(engine, table=real, key="k") for t, real in names.items()}
