"""``cachewise stats URL | --redis URL``: live view of a shared write-back and of connections.

The shared write-back (``WriteBack(journal="redis")``) keeps its backlog in Redis, so
any process can watch it: dirty keys, flushers' claims, the oldest dirty key's age.
A database URL shows the server's view of its client connections (a pool is private to
its process; the server sees every pool). Refreshed every second in a rich table that
fits 80 columns; ``--json`` prints one snapshot for scripts. Passwords are never shown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cachewise._connections import read_connections
from cachewise._redact import redact, scrub, secrets
from cachewise._types import check_seconds
from cachewise.errors import CachewiseError
from cachewise.pool import connect

_TOP = 5
"""Applications the live view lists (the JSON has every one)."""

DESCRIPTION = (
    "Watch a shared write-back's backlog in Redis (--redis URL: dirty keys, claims held "
    "by flushers, the oldest dirty key's age) and a database server's client connections "
    "(URL: by state and by application, against max_connections), refreshed every "
    "--interval seconds until Ctrl-C. --json prints one snapshot and exits. Passwords "
    "are never printed. Exit status: 0, or 2 for bad arguments or an unreachable server."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``stats`` command."""
    parser = subparsers.add_parser(
        "stats",
        help="live view of a shared write-back's backlog and a database's connections",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "url", nargs="?", help="database URL (PostgreSQL or MariaDB) whose connections to show"
    )
    parser.add_argument("--redis", metavar="URL", help="the Redis of a shared write-back")
    parser.add_argument(
        "--namespace",
        default="cw",
        help="the RedisStore namespace of the shared write-back (default cw)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON snapshot and exit")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes"
    )
    parser.add_argument(
        "--count", type=int, default=0, metavar="N", help="stop after N refreshes (0: never)"
    )
    parser.set_defaults(run=run)


class _Watch:
    """The servers being watched: one Redis client and one engine, opened once."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.hidden = secrets(args.url or "") + secrets(args.redis or "")
        self.redis: Any = None
        self.engine: Any = None

    def open(self) -> None:
        if self.args.redis:
            from cachewise.stores._redis_cluster import cluster_enabled  # noqa: PLC0415
            from cachewise.stores.redis import RedisStore  # noqa: PLC0415 - redis-py is optional

            cluster = cluster_enabled(self.args.redis)  # a cluster node: its index is spread
            store = RedisStore(self.args.redis, namespace=self.args.namespace, cluster=cluster)
            self.redis = store.client
        if self.args.url:
            self.engine = connect(self.args.url, pool_size=1)

    def snapshot(self) -> dict[str, Any]:
        """Everything watched, as plain data (the JSON output and the table's rows)."""
        out: dict[str, Any] = {"time": time.time()}
        if self.redis is not None:
            from cachewise.writeback.shared import read_backlog  # noqa: PLC0415 - needs redis-py

            backlog = read_backlog(self.redis, self.args.namespace)
            out["write_back"] = {
                "redis": redact(self.args.redis),
                "namespace": self.args.namespace,
                **backlog.__dict__,
            }
        if self.engine is not None:
            out["connections"] = {
                "url": redact(self.args.url),
                **read_connections(self.engine).as_dict(),
            }
        return out

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self.redis is not None:
            self.redis.close()


def view(snapshot: dict[str, Any]) -> Group:
    """The snapshot as rich tables, each under 80 columns."""
    parts: list[Table | Text] = []
    wb = snapshot.get("write_back")
    if wb is not None:
        parts.append(Text(f"shared write-back {wb['namespace']} @ {wb['redis']}", style="bold"))
        table = Table(show_header=False, min_width=40)
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        table.add_row("dirty keys (backlog)", f"{wb['dirty']:,}")
        table.add_row("oldest dirty age", f"{wb['oldest_dirty_age']:,.1f} s")
        table.add_row("claimed by flushers", f"{wb['claimed']:,} of the {wb['sampled']:,} oldest")
        parts.append(table)
    conns = snapshot.get("connections")
    if conns is not None:
        parts.append(Text(f"connections @ {conns['url']}", style="bold"))
        table = Table(show_header=False, min_width=40)
        table.add_column("what", style="bold", overflow="fold", max_width=44)
        table.add_column("value", justify="right")
        table.add_row("total / max_connections", f"{conns['total']} / {conns['max_connections']}")
        table.add_row("active (running a query)", str(conns["active"]))
        table.add_row("idle", str(conns["idle"]))
        table.add_row("idle in transaction", str(conns["idle_in_transaction"]))
        table.add_row("waiting on a lock", str(conns["waiting_on_lock"]))
        for app, n in list(conns["by_application"].items())[:_TOP]:
            table.add_row(f"  {app}", str(n))
        parts.append(table)
    return Group(*parts)


def run(args: argparse.Namespace) -> int:
    """Watch until Ctrl-C or ``--count`` refreshes; 2 on bad arguments or a server error."""
    try:
        _check(args)
    except CachewiseError as exc:
        print(f"cachewise stats: {exc}", file=sys.stderr)
        return 2
    watch = _Watch(args)
    try:
        watch.open()
        if args.json:
            print(json.dumps(watch.snapshot(), indent=2))
            return 0
        _live(watch, args)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # a server we cannot reach: one line, password scrubbed
        print(f"cachewise stats: {scrub(_describe(exc), watch.hidden)}", file=sys.stderr)
        return 2
    finally:
        watch.close()
    return 0


def _check(args: argparse.Namespace) -> None:
    """Refuse bad arguments before connecting to anything."""
    if not args.url and not args.redis:
        raise CachewiseError("give a database URL, --redis URL, or both")
    check_seconds(args.interval, "--interval")
    if args.count < 0:
        raise CachewiseError("--count must be 0 (never stop) or more")


def _describe(exc: BaseException) -> str:
    """The first line of an error (driver errors carry pages of context)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _live(watch: _Watch, args: argparse.Namespace) -> None:
    console = Console()
    shown = 0
    with Live(view(watch.snapshot()), console=console, auto_refresh=False) as live:
        live.refresh()
        shown = 1
        while not args.count or shown < args.count:
            time.sleep(args.interval)
            live.update(view(watch.snapshot()), refresh=True)
            shown += 1
    if not console.is_terminal:
        console.line()
