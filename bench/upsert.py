"""Benchmark: upsert forms per dialect, the write-back flush path of SQLSource.

A flush writes dirty rows in batches (1,000 rows by default), one transaction per
batch. For each dialect this measures every upsert form ``SQLSource`` can use
(``cachewise.sources._upsert.FORMS``) on the same rows, twice: once inserting new keys
and once updating the same keys with new values, plus ``SQLSource.save_many`` end to
end (key checks and all) with the form it picked. The peer is ``executemany``: what a
straightforward implementation does. Rows/s are medians over ``--repeat`` rounds.
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
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cachewise import SQLSource
from cachewise._types import Key
from cachewise.sources import _upsert

NAME = "upsert"
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
DEFAULT_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
RESULTS = Path(__file__).parent / "results" / "upsert.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=100_000, help="rows per measured pass")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per flush batch")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per form (median kept)")
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


def _batches(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
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


def _timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _measure_form(
    engine: sa.Engine, form: _upsert.UpsertForm, args: argparse.Namespace
) -> dict[str, float]:
    """Rows/s inserting ``rows`` new keys, then updating them all (one txn per batch)."""
    name = f"cw_bench_{uuid.uuid4().hex[:10]}"
    table = _table(name)
    table.create(engine)
    try:
        reflected = sa.Table(name, sa.MetaData(), autoload_with=engine)
        target = _upsert.Target(reflected, ("id",), None)
        columns = [c.name for c in reflected.c]
        result = {}
        for phase, generation in (("insert", 1), ("update", 2)):
            rows = _rows(args.rows, generation)

            def flush(rows: list[dict[str, Any]] = rows) -> None:
                for batch in _batches(rows, args.batch):
                    with engine.begin() as conn:
                        form(conn, target, columns, batch)

            result[phase] = args.rows / _timed(flush)
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(reflected)).scalar()
        assert count == args.rows, f"{count} rows after the benchmark, expected {args.rows}"
        return result
    finally:
        table.drop(engine)


def _measure_source(engine: sa.Engine, args: argparse.Namespace, version: bool) -> dict[str, Any]:
    """Rows/s of ``SQLSource.save_many`` per batch, end to end, with its default form."""
    name = f"cw_bench_{uuid.uuid4().hex[:10]}"
    table = _table(name)
    table.create(engine)
    try:
        source = SQLSource(engine, name, chunk_size=args.batch, version="seq" if version else None)
        result: dict[str, Any] = {"form": source.upsert_form}
        for phase, generation in (("insert", 1), ("update", 2)):
            items: list[dict[Key, Any]] = [
                {row["id"]: row for row in batch}
                for batch in _batches(_rows(args.rows, generation), args.batch)
            ]

            def flush(items: list[dict[Key, Any]] = items) -> None:
                for batch in items:
                    source.save_many(batch)

            result[phase] = args.rows / _timed(flush)
        source.close()
        return result
    finally:
        table.drop(engine)


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for field in rounds[0]:
        values = [r[field] for r in rounds]
        merged[field] = (
            round(statistics.median(values)) if isinstance(values[0], float) else values[0]
        )
    return merged


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every form on every reachable dialect; print and return the results."""
    results: dict[str, Any] = {
        "benchmark": NAME,
        "rows": args.rows,
        "batch": args.batch,
        "repeat": args.repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlalchemy": sa.__version__,
            "platform": platform.platform(),
        },
        "unit": "rows/s (median of rounds), one transaction per batch",
        "dialects": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in [d.strip() for d in args.dialects.split(",") if d.strip()]:
            engine = _engine(dialect, args, tmp)
            if engine is None:
                continue
            try:
                found: dict[str, Any] = {"server_version": _server_version(engine), "forms": {}}
                forms = _upsert.FORMS[engine.dialect.name]
                rounds: dict[str, list[dict[str, Any]]] = {}
                # Round-robin so drift on a noisy machine hits every form alike.
                for _ in range(args.repeat):
                    for form_name, form in forms.items():
                        rounds.setdefault(form_name, []).append(_measure_form(engine, form, args))
                    rounds.setdefault("SQLSource.save_many", []).append(
                        _measure_source(engine, args, version=False)
                    )
                    rounds.setdefault("SQLSource.save_many versioned", []).append(
                        _measure_source(engine, args, version=True)
                    )
                for form_name, measured in rounds.items():
                    found["forms"][form_name] = _median(measured)
                peer = found["forms"]["executemany"]
                for measured in found["forms"].values():
                    measured["ratio_vs_executemany"] = {
                        phase: round(measured[phase] / peer[phase], 2)
                        for phase in ("insert", "update")
                    }
                found["fastest"] = max(
                    forms, key=lambda f: found["forms"][f]["insert"] + found["forms"][f]["update"]
                )
                found["default"] = _upsert.DEFAULT_FORMS[engine.dialect.name]
                results["dialects"][dialect] = found
            finally:
                engine.dispose()
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    options = parser.parse_args()
    found = run(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(found, indent=2) + "\n")
