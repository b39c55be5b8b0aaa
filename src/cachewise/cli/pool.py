"""``cachewise pool URL``: probe a database through ``connect()`` and print ``pool_stats``.

A quick check of a deployment's pool settings: it runs a few short queries from a few
threads through the pool cachewise would build, then prints what the pool saw (size,
connections opened, acquire waits, timeouts). Passwords are never printed.
"""

from __future__ import annotations

import argparse
import json
import threading

import sqlalchemy as sa

from cachewise._redact import redact
from cachewise.errors import CachewiseError
from cachewise.pool import connect, pool_stats


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pool`` command."""
    parser = subparsers.add_parser(
        "pool",
        help="probe a database through connect() and print the pool's statistics",
        description=__doc__,
    )
    parser.add_argument("url", help="database URL (sqlite:///file.db, postgresql://...)")
    parser.add_argument("--pool-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="queries per thread")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Probe, print, return the exit status (2 on a configuration or connection error)."""
    if args.threads < 1 or args.requests < 1:
        print("cachewise pool: --threads and --requests must be at least 1")
        return 2
    try:
        engine = connect(args.url, pool_size=args.pool_size)
    except CachewiseError as exc:
        print(f"cachewise pool: {exc}")
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
