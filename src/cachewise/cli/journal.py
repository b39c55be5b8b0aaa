"""``cachewise journal inspect PATH``: print a write-back journal's records and damage."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cachewise.errors import ConfigurationError
from cachewise.writeback.journal import Inspection, inspect_journal

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``journal`` command and its ``inspect`` subcommand."""
    journal = subparsers.add_parser(
        "journal",
        help="write-back journal tools",
        description="Tools for the local journal of WriteBack(journal=PATH).",
    )
    actions = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    inspect = actions.add_parser(
        "inspect",
        help="print records, the last flushed sequence and any damage (read-only)",
        description=(
            "Read a write-back journal directory without changing it. Exit status: 0 "
            "clean (or only a torn tail, which opening truncates), 1 corruption that "
            "stops start-up, 2 not a journal."
        ),
    )
    inspect.add_argument("path", help="the journal directory (WriteBack(journal=PATH))")
    inspect.add_argument(
        "--unflushed", action="store_true", help="only records above the flushed sequence"
    )
    inspect.add_argument(
        "--summary", action="store_true", help="counts and damage only, no records"
    )
    inspect.set_defaults(run=run_inspect)


def _short(value: Any, width: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def run_inspect(args: argparse.Namespace) -> int:
    """Print the inspection of ``args.path``; return the exit status."""
    try:
        report = inspect_journal(args.path)
    except ConfigurationError as exc:
        print(f"cachewise journal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.summary:
        _print_records(report, unflushed_only=args.unflushed)
    return _print_summary(report)


def _print_records(report: Inspection, *, unflushed_only: bool) -> None:
    for record in report.records:
        if unflushed_only and record.flushed:
            continue
        state = "rejected" if record.rejected else "flushed" if record.flushed else "pending"
        where = f"{record.segment}@{record.offset}"
        if record.error is not None:
            print(f"seq={record.seq} {where} {state} UNDECODABLE: {record.error}")
        elif record.deleted:
            print(f"seq={record.seq} {where} {state} DELETE key={_short(record.key)}")
        else:
            print(
                f"seq={record.seq} {where} {state} PUT key={_short(record.key)} "
                f"value={_short(record.value)}"
            )


def _print_summary(report: Inspection) -> int:
    pending = sum(1 for r in report.records if not r.flushed and not r.rejected)
    rejected = sum(1 for r in report.records if r.rejected)
    print(f"journal: {report.path}")
    segments = ", ".join(f"{name} ({size} bytes)" for name, size in report.segments)
    print(f"segments: {len(report.segments)}{': ' + segments if segments else ''}")
    print(f"last flushed sequence: {report.flushed}")
    print(f"highest sequence: {report.last_seq}")
    print(f"records: {len(report.records)} ({pending} above the flushed sequence)")
    if rejected:
        print(f"rejected: {rejected} writes the source refused (replayed at start-up)")
    status = EXIT_OK
    if report.meta_damaged:
        print("damage: the meta file is damaged (start-up stops: JournalCorruptError)")
        status = EXIT_CORRUPT
    undecodable = [r for r in report.records if r.error is not None]
    for record in undecodable:
        print(f"damage: undecodable record at {record.segment} offset {record.offset}")
        status = EXIT_CORRUPT
    for damage in report.damage:
        if damage.torn_tail:
            print(
                f"damage: torn tail at {damage.segment} offset {damage.offset} "
                f"({damage.reason}); opening the journal truncates it"
            )
        else:
            print(
                f"damage: CORRUPT at {damage.segment} offset {damage.offset} "
                f"({damage.reason}); start-up stops with JournalCorruptError"
            )
            status = EXIT_CORRUPT
    if status == EXIT_OK and not report.damage:
        print("damage: none")
    return status
