"""``cachewise lab``: run the workshop's cases, print the report, write JSON and HTML."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cachewise._redact import redact
from cachewise.errors import CachewiseError, ConfigurationError
from cachewise.lab import html, report, schema
from cachewise.lab.assemble import Environment
from cachewise.lab.cases import CASES
from cachewise.lab.database import Database
from cachewise.lab.pooling import POOLING, run_pooling
from cachewise.lab.runner import CaseResult, run_case, steps

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
    parser.add_argument(
        "--quick", action="store_true", help="small workloads (about a minute for all cases)"
    )
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
    parser.add_argument(
        "--json", metavar="FILE", help="write the JSON report here (checked before the run)"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="write a self-contained HTML report (checked before the run)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="CASE.KEY=VALUE",
        help="change a workload parameter, e.g. stock-prices.write_share=0.02",
    )
    parser.add_argument(
        "--seed", type=int, default=7, metavar="N", help="workload seed (default 7)"
    )
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


class _ReportFile:
    """A report file opened before the lab runs, so a bad path fails first, in one line.

    Opened for appending (an existing report is replaced only when the new one is
    written); a file we created is removed again if the lab does not finish.
    """

    def __init__(self, path: str, option: str) -> None:
        self.path = path
        self._created = not os.path.lexists(path)
        try:
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held until write()
        except OSError as exc:
            raise ConfigurationError(f"{option} {path}: {exc.strerror}") from None

    def write(self, text: str) -> None:
        with self._file as fh:
            fh.truncate(0)
            fh.write(text)

    def discard(self) -> None:
        self._file.close()
        if self._created:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _store_urls(args: argparse.Namespace) -> None:
    """``--store`` into ``args.redis`` (redis://...) or ``args.memcached`` (memcached://...)."""
    args.memcached = None
    store = args.store
    if store is None:
        return
    if args.redis is not None:
        raise ConfigurationError("give --store or --redis, not both")
    if store.startswith(("redis://", "rediss://", "unix://")):
        args.redis = store
    elif store.startswith("memcached://"):
        args.memcached = store
    else:
        raise ConfigurationError(
            f"--store takes redis://... or memcached://..., got {redact(store)!r}"
        )


def _check_redis(url: str) -> None:
    """A --redis URL redis-py would misread (or not a Redis URL) fails before the run."""
    try:
        from cachewise.stores.redis import check_redis_url  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ConfigurationError("--redis needs redis-py: pip install 'cachewise[redis]'") from None
    check_redis_url(url)


def _console() -> Console:
    # Piped output (a log, a file) gets the full width rather than rich's 80 columns,
    # unless COLUMNS says otherwise.
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=report.WIDE + 30)


def run(args: argparse.Namespace) -> int:
    """The ``cachewise lab`` handler."""
    console = _console()
    errors = Console(stderr=True)
    names = list(dict.fromkeys(args.case)) if args.case else list(CASE_NAMES)
    outputs: list[_ReportFile] = []
    try:
        params = parse_params(args.param)
        _check_params(names, params, args.quick)
        _store_urls(args)
        if args.redis is not None:
            _check_redis(args.redis)
        json_file = _ReportFile(args.json, "--json") if args.json else None
        outputs += [json_file] if json_file else []
        html_file = _ReportFile(args.html, "--html") if args.html else None
        outputs += [html_file] if html_file else []
    except ConfigurationError as exc:
        for output in outputs:
            output.discard()
        errors.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
        return 2
    try:
        results = _run(args, names, params, errors)
    except BaseException:
        for output in outputs:
            output.discard()
        raise
    if results is None:
        for output in outputs:
            output.discard()
        return 1
    for result in results:
        report.print_case(console, result)
    report.print_overview(console, results)
    meta = {
        "seed": args.seed,
        "quick": bool(args.quick),
        "database": redact(args.database) if args.database else "sqlite (temporary file)",
        "store": "redis" if args.redis else "memcached" if args.memcached else "memory",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if json_file is not None:
        json_file.write(json.dumps(schema.document(results, meta), indent=2) + "\n")
        console.print(f"JSON report: {escape(json_file.path)}")
    if html_file is not None:
        html_file.write(html.render(results, meta))
        console.print(f"HTML report: {escape(html_file.path)}")
    return 0


def _run(
    args: argparse.Namespace,
    names: list[str],
    params: dict[str, dict[str, str]],
    errors: Console,
) -> list[CaseResult] | None:
    """Run the cases with a progress bar; None (reported in one line) if a service failed."""
    database = Database(args.database)
    env = Environment(database, redis_url=args.redis, memcached_url=args.memcached)
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

            return run_lab(
                names, env, quick=args.quick, params=params, seed=args.seed, advance=advance
            )
    except CachewiseError as exc:
        # An unreachable database or Redis, a refused connection: one line, no traceback.
        errors.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
        return None
    finally:
        database.cleanup()


def _case(name: str) -> Any:
    return next(c for c in CASES if c.name == name)
