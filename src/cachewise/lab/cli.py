"""``cachewise lab``: run the workshop's cases, print the report, write JSON and HTML."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cachewise.errors import CachewiseError, ConfigurationError
from cachewise.lab import html, report, schema
from cachewise.lab.assemble import Environment
from cachewise.lab.cases import CASES
from cachewise.lab.database import Database
from cachewise.lab.pooling import POOLING, run_pooling
from cachewise.lab.runner import CaseResult, run_case, steps
from cachewise.pool import redact

CASE_NAMES = (*(c.name for c in CASES), POOLING.name)


def register(subparsers: Any) -> None:
    """Add the ``lab`` subcommand."""
    parser = subparsers.add_parser(
        "lab",
        help="run the workshop's six cases (and pooling) and recommend a strategy each",
        description=(
            "Runs every candidate caching strategy on each case's seeded workload against a "
            "real database, measures it, and recommends by the case's objective."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="small workloads (< 30 s)")
    parser.add_argument(
        "--case",
        action="append",
        choices=CASE_NAMES,
        metavar="NAME",
        help=f"run only this case (repeatable): {', '.join(CASE_NAMES)}",
    )
    parser.add_argument("--database", metavar="URL", help="SQL database (default: temp SQLite)")
    parser.add_argument("--redis", metavar="URL", help="cache in Redis instead of in memory")
    parser.add_argument(
        "--store", metavar="URL", help="cache in redis://... or memcached://... instead of memory"
    )
    parser.add_argument("--json", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="CASE.KEY=VALUE",
        help="change a workload parameter, e.g. stock-prices.write_share=0.02",
    )
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    parser.set_defaults(run=run)


def parse_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``["case.key=value", ...]`` as ``{case: {key: value}}``; ConfigurationError if malformed."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name, eq, value = item.partition("=")
        case, dot, key = name.partition(".")
        if not eq or not dot or not key:
            raise ConfigurationError(f"--param {item!r}: expected CASE.KEY=VALUE")
        if case not in CASE_NAMES:
            raise ConfigurationError(f"--param {item!r}: no case {case!r}")
        out.setdefault(case, {})[key] = value
    return out


def run_lab(
    names: list[str],
    env: Environment,
    *,
    quick: bool,
    params: dict[str, dict[str, str]],
    seed: int,
    advance: Callable[[str], None] = lambda name: None,
) -> list[CaseResult]:
    """Run the named cases in order."""
    results = []
    for name in names:
        if name == POOLING.name:
            result = run_pooling(
                env,
                quick=quick,
                overrides=params.get(name),
                seed=seed,
                progress=lambda n=name: advance(n),  # type: ignore[misc]
            )
        else:
            case = next(c for c in CASES if c.name == name)
            result = run_case(
                case,
                env,
                quick=quick,
                overrides=params.get(name),
                seed=seed,
                progress=lambda n=name: advance(n),  # type: ignore[misc]
            )
        results.append(result)
    return results


def _check_params(names: list[str], params: dict[str, dict[str, str]], quick: bool) -> None:
    for case_name, values in params.items():
        case = (
            POOLING if case_name == POOLING.name else next(c for c in CASES if c.name == case_name)
        )
        case.params(quick, values)  # raises on an unknown key or a bad value
        if case_name not in names:
            raise ConfigurationError(f"--param for {case_name!r}, which is not being run")


def run(args: argparse.Namespace) -> int:
    """The ``cachewise lab`` handler."""
    # Piped output (a log, a file) gets the full width rather than rich's 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=report.WIDE + 30)
    errors = Console(stderr=True)
    names = list(dict.fromkeys(args.case)) if args.case else list(CASE_NAMES)
    try:
        params = parse_params(args.param)
        _check_params(names, params, args.quick)
    except ConfigurationError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        return 2
    try:
        redis_url, memcached_url = _store_urls(args.redis, args.store)
    except ConfigurationError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        return 2
    database = Database(args.database)
    env = Environment(database, redis_url=redis_url, memcached_url=memcached_url)
    total = sum(
        len(POOLING.kinds[0].candidates) if n == POOLING.name else steps(_case(n)) for n in names
    )
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
            auto_refresh=False,  # no refresh thread: the lab forks crash children
        ) as progress:
            task = progress.add_task("lab", total=total)

            def advance(name: str) -> None:
                progress.update(task, advance=1, description=name)
                progress.refresh()

            results = run_lab(
                names, env, quick=args.quick, params=params, seed=args.seed, advance=advance
            )
    except CachewiseError as exc:
        # An unreachable database or Redis, a refused connection: one line, no traceback.
        errors.print(f"[red]error:[/red] {exc}")
        return 1
    finally:
        database.cleanup()
    for result in results:
        report.print_case(console, result)
    report.print_overview(console, results)
    meta = {
        "seed": args.seed,
        "quick": bool(args.quick),
        "database": redact(args.database) if args.database else "sqlite (temporary file)",
        "store": "redis" if redis_url else "memcached" if memcached_url else "memory",
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(schema.document(results, meta), fh, indent=2)
            fh.write("\n")
        console.print(f"JSON report: {args.json}")
    if args.html:
        with open(args.html, "w", encoding="utf-8") as fh:
            fh.write(html.render(results))
        console.print(f"HTML report: {args.html}")
    return 0


def _store_urls(redis: str | None, store: str | None) -> tuple[str | None, str | None]:
    """``--redis`` and ``--store`` as (redis URL, memcached URL)."""
    if store is None:
        return redis, None
    if redis is not None:
        raise ConfigurationError("give --store or --redis, not both")
    if store.startswith(("redis://", "rediss://", "unix://")):
        return store, None
    if store.startswith("memcached://"):
        return None, store
    raise ConfigurationError(f"--store takes redis://... or memcached://..., got {store!r}")


def _case(name: str) -> Any:
    return next(c for c in CASES if c.name == name)
