"""The ``cachewise`` command: one module per subcommand (lab, journal, aggregate, pool, stats)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from cachewise import __version__

COMMANDS: tuple[str, ...] = (
    "cachewise.cli.aggregate",
    "cachewise.cli.journal",
    "cachewise.cli.pool",
    "cachewise.cli.stats",
    "cachewise.cli.lab",
)
"""Modules that each add subcommands with ``register(subparsers)``; one job per module."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="cachewise",
        description="Application-level caching in front of a SQL database: lab and tools.",
        epilog="Run 'cachewise COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"cachewise {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code
