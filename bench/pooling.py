"""Benchmark: connection pooling on PostgreSQL, a primary-key SELECT per request.

Contenders, interleaved in short rounds at 1 and 16 threads: a new connection per
request; ``cachewise.connect()`` through SQLAlchemy's Engine and through
``cachewise.pool.dbapi_connection()``; psycopg_pool; SQLAlchemy's stock ``QueuePool``
engine; a new client connection per request through our own PgBouncer (transaction
mode). Reports requests/s (median over rounds), p50/p99 latency, client CPU per request,
ratios against "new connection" and psycopg_pool, and a CPU breakdown of where
SQLAlchemy's time goes (pool vs Engine/Connection/Result layers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cachewise._poolmeasure import CONTENDERS, measure
from cachewise.pool import redact

NAME = "pooling"
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
RESULTS = Path(__file__).parent / "results" / "pooling.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_POSTGRES))
    parser.add_argument("--threads", default="1,16", help="comma-separated thread counts")
    parser.add_argument("--seconds", type=float, default=0.5, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per contender")
    parser.add_argument("--pool-size", type=int, default=None, help="cachewise and psycopg_pool")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset")
    parser.add_argument("--no-layers", action="store_true", help="skip the CPU breakdown")


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = [int(t) for t in str(args.threads).split(",") if t]
    contenders = [c.strip() for c in str(args.contenders).split(",") if c.strip()]
    print(f"pooling: {redact(args.url)}, threads {threads}, {args.rounds} rounds x {args.seconds}s")
    found = measure(
        args.url,
        threads=threads,
        seconds=args.seconds,
        rounds=args.rounds,
        pool_size=args.pool_size,
        contenders=contenders,
        layers=not args.no_layers,
        progress=print,
    )
    print("\nratios (req/s over new connection | over psycopg_pool):")
    for name, entry in found["ratios"].items():
        print(
            f"  {name:<48} {entry.get('x_new_connection', float('nan')):>7.1f}x"
            f"  {entry.get('x_psycopg_pool', float('nan')):>6.2f}x"
        )
    if "layers_cpu_us" in found:
        print("\nclient CPU per operation (us, 1 thread):")
        for name, value in found["layers_cpu_us"].items():
            print(f"  {name:<44} {value:>7.1f}")
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    options = parser.parse_args()
    result = run(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps({"benchmark": NAME, "result": result}, indent=2) + "\n")
    print(f"\nwrote {options.out}", file=sys.stderr)
