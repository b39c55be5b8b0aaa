"""``cachewise aggregate refresh|status NAME``: refresh or inspect an aggregate (for cron).

A cron-driven setup runs ``cachewise aggregate refresh NAME --database URL`` on its
schedule. The aggregate is found by name in the database's registry; ``--query`` and
``--key`` define it there first if it does not exist yet (or rebuild it if its
definition changed), so a crontab line alone can own an aggregate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cachewise._redact import redact
from cachewise.aggregates import Aggregate
from cachewise.errors import CachewiseError, ConfigurationError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_ENV = "CACHEWISE_DATABASE_URL"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``aggregate`` command and its ``refresh`` and ``status`` subcommands."""
    aggregate = subparsers.add_parser(
        "aggregate",
        help="materialized views and summary tables (the custom aggregation level)",
        description=(
            "Refresh or inspect an aggregate (a materialized view or summary table) by name, "
            "for example from cron."
        ),
    )
    actions = aggregate.add_subparsers(dest="aggregate_command", required=True, metavar="ACTION")
    refresh = actions.add_parser(
        "refresh",
        help="recompute an aggregate now and swap the result in atomically",
        description=(
            "Refresh the aggregate NAME. Without --query it must exist already (created "
            "by the application or an earlier run); with --query and --key it is created "
            "first if absent. One refresh runs at a time per aggregate, across processes. "
            "Exit status: 0 refreshed, 1 the refresh failed (the previous result stays), "
            "2 bad arguments or no such aggregate."
        ),
    )
    _common(refresh)
    source = refresh.add_mutually_exclusive_group()
    source.add_argument(
        "--query", metavar="SQL", help="the aggregate's SQL query (defines it if absent)"
    )
    source.add_argument("--query-file", metavar="FILE", help="read the SQL query from this file")
    refresh.add_argument(
        "--key",
        action="append",
        metavar="COLUMN",
        help="key column of the result (repeat, or comma-separate, for a composite key)",
    )
    refresh.set_defaults(run=run_refresh)

    status = actions.add_parser(
        "status",
        help="when an aggregate was last refreshed, how long it took, the last error",
        description=(
            "Print the aggregate NAME's refresh state: generation, when it was last "
            "refreshed, how long that took and the last error. Exit status: 0 printed, "
            "1 the database failed, 2 bad arguments or no such aggregate."
        ),
    )
    _common(status)
    status.set_defaults(run=run_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the aggregate's name (its view or table name)")
    parser.add_argument(
        "--database",
        default=os.environ.get(_ENV),
        metavar="URL",
        help=f"database URL (default: ${_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _keys(values: list[str] | None) -> tuple[str, ...]:
    keys = [part.strip() for value in values or [] for part in value.split(",")]
    return tuple(k for k in keys if k)


def _query(args: argparse.Namespace) -> str | None:
    if args.query_file:
        try:
            with open(args.query_file, encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise ConfigurationError(f"cannot read --query-file: {exc}") from exc
    query: str | None = args.query
    return query


def _open(args: argparse.Namespace, query: str | None, keys: tuple[str, ...]) -> Aggregate:
    if not args.database:
        raise ConfigurationError(f"no database: pass --database URL or set ${_ENV}")
    if query is None:
        if keys:
            raise ConfigurationError("--key needs --query (an existing aggregate has its key)")
        return Aggregate.existing(args.database, args.name, check_interval=None)
    if not keys:
        raise ConfigurationError("--query needs --key (the result column(s) to read by)")
    return Aggregate(args.database, args.name, query, keys, check_interval=None)


def _report(agg: Aggregate) -> dict[str, Any]:
    at = agg.refreshed_at
    return {
        "name": agg.name,
        "generation": agg.generation,
        "refreshed_at": at.isoformat() if at is not None else None,
        "refresh_duration": agg.refresh_duration,
        "last_error": agg.last_error,
        "database": redact(agg.engine.url),
    }


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    for field, value in report.items():
        print(f"{field}: {value}")


def _opened(args: argparse.Namespace, *, define: bool) -> Aggregate | int:
    """The aggregate (defined by --query/--key when ``define``), or the exit status."""
    try:
        if define:
            return _open(args, _query(args), _keys(args.key))
        return _open(args, None, ())
    except ConfigurationError as exc:
        print(f"cachewise: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CachewiseError as exc:
        print(f"cachewise: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run_refresh(args: argparse.Namespace) -> int:
    """Refresh the named aggregate; return the exit status."""
    agg = _opened(args, define=True)
    if isinstance(agg, int):
        return agg
    with agg:
        try:
            if not agg.created:  # a just-created aggregate is fresh already
                agg.refresh()
        except CachewiseError as exc:
            print(f"cachewise: {exc}", file=sys.stderr)
            return EXIT_FAILED
        _print(_report(agg), args.json)
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    """Print the named aggregate's refresh state; return the exit status."""
    agg = _opened(args, define=False)
    if isinstance(agg, int):
        return agg
    with agg:
        _print(_report(agg), args.json)
    return EXIT_OK
