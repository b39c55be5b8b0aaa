"""Benchmark runner: ``python -m bench NAME [options]``; results go to bench/results/NAME.json.

Each benchmark module exposes ``NAME``, ``add_arguments(parser)`` and ``run(args) -> dict``
(it prints its own table). Timings on a shared machine are only meaningful as ratios
against a peer measured in the same run, so every benchmark measures its peers too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

BENCHMARKS = {
    "hotpath": "bench.hotpath",
    "hitratio": "bench.hitratio",
    "misspath": "bench.misspath",
    "upsert": "bench.upsert",
    "pooling": "bench.pooling",
    "redis": "bench.redis",
    "writeback": "bench.writeback",
    "shared-writeback": "bench.shared_writeback",
    "writeback-lag": "bench.writeback_lag",
    "aggregates": "bench.aggregates",
    "copying": "bench.copying",
    "aio": "bench.aio",
    "sqlmiss": "bench.sqlmiss",
    "metrics": "bench.metrics_overhead",
    "cluster": "bench.cluster",
}
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, module_name in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            sub.add_parser(name, help=f"(unavailable: {exc})")
            continue
        bench_parser = sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0])
        bench_parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json")
        module.add_arguments(bench_parser)
        bench_parser.set_defaults(module=module)
    args = parser.parse_args(argv)
    if not hasattr(args, "module"):
        parser.error(f"benchmark {args.name} cannot run here (missing dependency)")
    started = time.time()
    result = args.module.run(args)
    record = {
        "benchmark": args.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "result": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
