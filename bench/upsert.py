"""Benchmark: upsert forms per dialect, the write-back flush path of SQLSource.

A flush writes dirty rows in batches (1,000 rows by default), one transaction per
batch. For each dialect this measures every upsert form ``SQLSource`` can use
(``cachewise.sources._upsert.FORMS``) on the same rows, twice: once inserting new keys
and once updating the same keys with new values, plus ``SQLSource.save_many`` end to
end (key checks and all) with the form it picked. The peer is ``executemany``: what a
straightforward implementation does. Candidates take turns batch by batch, each on its
own table, so load from neighbours on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from cachewise import SQLSource
from cachewise._types import Key
from cachewise.sources import _upsert

NAME = "upsert"
_T = TypeVar("_T")
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
DEFAULT_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
RESULTS = Path(__file__).parent / "results" / "upsert.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=100_000, help="rows per measured pass")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per flush batch")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median kept)")
    parser.add_argument(
        "--dialects",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql, mysql",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL", DEFAULT_POSTGRES))
    parser.add_argument("--mysql-url", default=os.environ.get("MYSQL_URL", DEFAULT_MYSQL))


def _table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("price", sa.Numeric(12, 2), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def _rows(count: int, generation: int) -> list[dict[str, Any]]:
    stamp = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=generation)
    return [
        {
            "id": i,
            "name": f"product {i} g{generation}",
            "price": Decimal(i % 10_000) / 100 + generation,
            "qty": (i * 7 + generation) % 1000,
            "updated": stamp,
            "seq": generation,
        }
        for i in range(count)
    ]


def _batches(rows: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _engine(dialect: str, args: argparse.Namespace, tmp: str) -> sa.Engine | None:
    url = {
        "sqlite": f"sqlite:///{tmp}/upsert.db",
        "postgresql": args.postgres_url,
        "mysql": args.mysql_url,
    }[dialect]
    engine = sa.create_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            if dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    except sa.exc.OperationalError as exc:
        print(f"skipping {dialect}: {type(exc.orig).__name__}", file=sys.stderr)
        engine.dispose()
        return None
    return engine


class _Candidate:
    """One way to write a batch, against its own table."""

    def __init__(self, engine: sa.Engine, label: str) -> None:
        self.engine = engine
        self.label = label
        self.name = f"cw_bench_{uuid.uuid4().hex[:10]}"
        self.table = _table(self.name)
        self.seconds = {"insert": 0.0, "update": 0.0}

    def create(self) -> None:
        self.table.create(self.engine)

    def write(self, batch: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar()
        self.table.drop(self.engine)
        self.rows = count


class _Form(_Candidate):
    def __init__(self, engine: sa.Engine, label: str, form: _upsert.UpsertForm) -> None:
        super().__init__(engine, label)
        self.form = form

    def create(self) -> None:
        super().create()
        reflected = sa.Table(self.name, sa.MetaData(), autoload_with=self.engine)
        self.target = _upsert.Target(reflected, ("id",), None)
        self.columns = [c.name for c in reflected.c]

    def write(self, batch: Sequence[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            self.form(conn, self.target, self.columns, batch)


class _Source(_Candidate):
    def __init__(self, engine: sa.Engine, label: str, version: str | None) -> None:
        super().__init__(engine, label)
        self.version = version

    def create(self) -> None:
        super().create()
        self.source = SQLSource(self.engine, self.name, version=self.version, chunk_size=1000)

    def write(self, batch: Sequence[dict[str, Any]]) -> None:
        items: dict[Key, Any] = {row["id"]: row for row in batch}
        self.source.save_many(items)

    def close(self) -> None:
        self.source.close()
        super().close()


def _measure(engine: sa.Engine, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Rows/s of every candidate, inserting new keys then updating them all.

    Candidates take turns batch by batch (each on its own table, one transaction per
    batch), so a burst of load from a neighbour on this shared machine slows every
    candidate alike and the ratios stay meaningful.
    """
    dialect = engine.dialect.name
    candidates: list[_Candidate] = [
        _Form(engine, name, form) for name, form in _upsert.FORMS[dialect].items()
    ]
    candidates.append(_Source(engine, "SQLSource.save_many", None))
    candidates.append(_Source(engine, "SQLSource.save_many versioned", "seq"))
    try:
        for candidate in candidates:
            candidate.create()
        for phase, generation in (("insert", 1), ("update", 2)):
            batches = list(_batches(_rows(args.rows, generation), args.batch))
            for batch in batches:
                for candidate in candidates:
                    start = time.perf_counter()
                    candidate.write(batch)
                    candidate.seconds[phase] += time.perf_counter() - start
    finally:
        for candidate in candidates:
            candidate.close()
    found: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        assert candidate.rows == args.rows, f"{candidate.label}: {candidate.rows} rows"
        found[candidate.label] = {
            phase: round(args.rows / seconds) for phase, seconds in candidate.seconds.items()
        }
    return found


def _measure_lookups(engine: sa.Engine, args: argparse.Namespace) -> dict[str, Any]:
    """PostgreSQL batch reads: keys as arrays (what SQLSource does) vs an ``IN`` list (peer).

    ``load_many`` of ``--rows`` distinct keys in chunks of ``--batch`` from a table of
    ``--rows`` rows, one-column and two-column keys; the two ways take turns by chunk.
    """
    from cachewise.sources._keysets import KeySet

    meta = sa.MetaData()
    single = sa.Table(
        f"cw_bench_{uuid.uuid4().hex[:10]}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", sa.Integer),
    )
    pair = sa.Table(
        f"cw_bench_{uuid.uuid4().hex[:10]}",
        meta,
        sa.Column("a", sa.String(20), primary_key=True),
        sa.Column("b", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", sa.Integer),
    )
    meta.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(single.insert(), [{"id": i, "v": i} for i in range(args.rows)])
            conn.execute(
                pair.insert(),
                [{"a": f"k{i % 1000}", "b": i // 1000, "v": i} for i in range(args.rows)],
            )
            conn.exec_driver_sql(f"ANALYZE {single.name}")
            conn.exec_driver_sql(f"ANALYZE {pair.name}")
        found: dict[str, Any] = {}
        cases: list[tuple[str, sa.Table, list[str], list[tuple[Any, ...]]]] = [
            ("one-column key", single, ["id"], [(i,) for i in range(args.rows)]),
            (
                "two-column key",
                pair,
                ["a", "b"],
                [(f"k{i % 1000}", i // 1000) for i in range(args.rows)],
            ),
        ]
        for label, table, key, keys in cases:
            arrays = KeySet(table, key, engine.dialect)
            in_list = KeySet(table, key, engine.dialect)
            in_list.arrays = False
            seconds = {"arrays": 0.0, "in_list": 0.0}
            rows = {"arrays": 0, "in_list": 0}
            with engine.connect() as conn:
                for chunk in _batches(keys, args.batch):
                    for name, keyset in (("arrays", arrays), ("in_list", in_list)):
                        start = time.perf_counter()
                        statement, params = keyset.select(chunk)
                        rows[name] += len(conn.execute(statement, params).all())
                        seconds[name] += time.perf_counter() - start
            assert rows["arrays"] == rows["in_list"] == args.rows, rows
            found[label] = {
                "arrays_keys_per_s": round(args.rows / seconds["arrays"]),
                "in_list_keys_per_s": round(args.rows / seconds["in_list"]),
                "ratio": round(seconds["in_list"] / seconds["arrays"], 2),
            }
        return found
    finally:
        meta.drop_all(engine)


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {field: round(statistics.median(r[field] for r in rounds)) for field in rounds[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every form on every reachable dialect; print and return the results."""
    results: dict[str, Any] = {
        "benchmark": NAME,
        "rows": args.rows,
        "batch": args.batch,
        "repeat": args.repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
            "python": platform.python_version(),
            "sqlalchemy": sa.__version__,
            "platform": platform.platform(),
        },
        "unit": "rows/s, one transaction per batch, candidates interleaved batch by batch",
        "dialects": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in [d.strip() for d in args.dialects.split(",") if d.strip()]:
            engine = _engine(dialect, args, tmp)
            if engine is None:
                continue
            try:
                rounds = [_measure(engine, args) for _ in range(args.repeat)]
                forms = {label: _median([r[label] for r in rounds]) for label in rounds[0]}
                peer = forms["executemany"]
                for measured in forms.values():
                    measured["ratio_vs_executemany"] = {
                        phase: round(measured[phase] / peer[phase], 2)
                        for phase in ("insert", "update")
                    }
                names = _upsert.FORMS[engine.dialect.name]
                results["dialects"][dialect] = {
                    "server_version": _server_version(engine),
                    "forms": forms,
                    "fastest": max(names, key=lambda f: forms[f]["insert"] + forms[f]["update"]),
                    "default": _upsert.DEFAULT_FORMS[engine.dialect.name],
                }
                if engine.dialect.name == "postgresql":
                    results["dialects"][dialect]["load_many"] = _measure_lookups(engine, args)
            finally:
                engine.dispose()
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    _print(results)
    return results


def _server_version(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        info = conn.dialect.server_version_info
    return ".".join(str(part) for part in info or ())


def _print(results: dict[str, Any]) -> None:
    print(f"{results['rows']} rows in batches of {results['batch']}, {results['unit']}")
    for dialect, found in results["dialects"].items():
        print(f"\n{dialect} {found['server_version']}  (fastest: {found['fastest']})")
        for form, measured in found["forms"].items():
            ratio = measured["ratio_vs_executemany"]
            print(
                f"  {form:32} insert {measured['insert']:>8,} "
                f"update {measured['update']:>8,}   x{ratio['insert']:.2f} / x{ratio['update']:.2f}"
            )
        for label, looked in found.get("load_many", {}).items():
            print(
                f"  load_many, {label}: arrays {looked['arrays_keys_per_s']:,} keys/s, "
                f"IN list {looked['in_list_keys_per_s']:,} keys/s (x{looked['ratio']:.2f})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    options = parser.parse_args()
    found = run(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(found, indent=2) + "\n")
