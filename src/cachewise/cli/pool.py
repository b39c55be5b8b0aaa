"""``cachewise pool URL``: probe a database through ``connect()`` and print ``pool_stats``.

A quick check of a deployment's pool settings: it runs a few short queries from a few
threads through the pool cachewise would build, then prints what the pool saw (size,
connections opened, acquire waits, timeouts). Passwords are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

import sqlalchemy as sa

from cachewise._redact import redact
from cachewise.errors import CachewiseError
from cachewise.pool import DEFAULT_POOL_SIZE, connect, pool_stats

DESCRIPTION = (
    "Probe a database through the pool cachewise builds (cachewise.connect) and print "
    "what the pool saw: its size, connections opened, acquire waits and timeouts. "
    "--threads threads each run --requests short queries at once. Passwords are never "
    "printed. Exit status: 0 every query ran, 1 some failed, 2 bad arguments or no "
    "connection."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pool`` command."""
    parser = subparsers.add_parser(
        "pool",
        help="probe a database through connect() and print the pool's statistics",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "url", help="database URL: sqlite:///file.db, postgresql://..., mysql://..."
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=DEFAULT_POOL_SIZE,
        metavar="N",
        help=f"connections the pool keeps (default {DEFAULT_POOL_SIZE}; 0: a new one per query)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        metavar="N",
        help="threads querying at once (default 4); more than --pool-size makes them wait",
    )
    parser.add_argument(
        "--requests", type=int, default=200, metavar="N", help="queries per thread (default 200)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Probe, print, return the exit status (2 on a configuration or connection error)."""
    if args.threads < 1 or args.requests < 1:
        print("cachewise pool: --threads and --requests must be at least 1", file=sys.stderr)
        return 2
    try:
        engine = connect(args.url, pool_size=args.pool_size)
    except CachewiseError as exc:
        print(f"cachewise pool: {exc}", file=sys.stderr)
        return 2
    errors: list[BaseException] = []

    def probe() -> None:
        try:
            for _ in range(args.requests):
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=probe) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = pool_stats(engine).as_dict()
    engine.dispose()
    if args.json:
        print(json.dumps({"url": redact(args.url), "errors": len(errors), **stats}, indent=2))
    else:
        print(f"pool of {redact(args.url)}: {args.threads} threads x {args.requests} queries")
        for name, value in stats.items():
            shown = f"{value * 1000:.3f} ms" if name.startswith("acquire_wait") and value else value
            print(f"  {name:18s} {shown}")
        if errors:
            print(f"  errors             {len(errors)}: {errors[0]}")
    return 1 if errors else 0
