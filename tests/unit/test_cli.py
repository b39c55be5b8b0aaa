"""The ``cachewise`` command line: version, ``python -m``, help text, errors up front."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cachewise
import cachewise.cli.lab
from cachewise.cli import build_parser, main


def _parsers(
    parser: argparse.ArgumentParser, name: str = "cachewise"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


PARSERS = dict(_parsers(build_parser()))


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    shown = capsys.readouterr().out.strip()
    assert shown == f"cachewise {importlib.metadata.version('cachewise')}"
    assert shown == f"cachewise {cachewise.__version__}"


def python_m_cachewise(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachewise", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )


def test_python_dash_m_cachewise_is_the_same_command() -> None:
    run = python_m_cachewise("--help")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: cachewise ")
    for command in ("lab", "pool", "journal", "aggregate"):
        assert command in run.stdout
    version = python_m_cachewise("--version")
    assert version.stdout.strip() == f"cachewise {cachewise.__version__}"


@pytest.mark.parametrize("name", list(PARSERS))
def test_every_command_and_option_is_described_in_plain_text(name: str) -> None:
    parser = PARSERS[name]
    text = parser.format_help()
    assert "``" not in text  # no raw reStructuredText
    if name != "cachewise":
        assert parser.description, f"{name} has no description"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{name} {choice.dest} has no help"
        elif action.dest != "help":
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_journal_inspect_of_a_directory_that_is_no_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not a journal")
    for directory in (tmp_path, tmp_path / "empty"):
        directory.mkdir(exist_ok=True)
        assert main(["journal", "inspect", str(directory)]) == 2
        out, err = capsys.readouterr()
        assert "not a journal" in err
        assert "damage: none" not in out
    assert main(["journal", "inspect", str(tmp_path / "notes.txt")]) == 2
    assert "not a journal" in capsys.readouterr().err


@pytest.fixture
def lab_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The case lists the lab was asked to run (it runs them for real)."""
    calls: list[list[str]] = []
    real = cachewise.cli.lab.run_lab

    def counted(names: list[str], *args: object, **kwargs: object) -> object:
        calls.append(names)
        return real(names, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cachewise.cli.lab, "run_lab", counted)
    return calls


@pytest.mark.parametrize("option", ["--json", "--html"])
def test_a_bad_report_path_fails_in_one_line_before_the_lab_runs(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], lab_runs: list[list[str]]
) -> None:
    for bad in (tmp_path / "no-such-dir" / "report", tmp_path):
        assert main(["lab", "--quick", "--case", "pooling", option, str(bad)]) == 2
        err = capsys.readouterr().err
        assert option in err
        assert str(bad) in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert lab_runs == []
    assert not (tmp_path / "no-such-dir").exists()


def test_a_failed_lab_leaves_no_empty_report_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lab_runs: list[list[str]]
) -> None:
    report = tmp_path / "lab.json"
    url = "postgresql://lab@127.0.0.1:1/nothing"  # refused
    assert main(["lab", "--quick", "--case", "pooling", "--database", url, "--json", str(report)])
    assert lab_runs == [["pooling"]]
    assert "error:" in capsys.readouterr().err
    assert not report.exists()


def test_a_report_replaces_the_previous_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "lab.html"
    report.write_text("x" * 100_000)  # longer than the new report: nothing of it may stay
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["lab", "--quick", "--case", "pooling", "--html", str(report)]) == 0
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "x" * 100 not in page
    out = capsys.readouterr().out
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80  # COLUMNS, though piped
    assert "recommended: pool" in out


def test_the_lab_is_as_wide_as_columns_says_when_piped() -> None:
    run = python_m_cachewise("lab", "--quick", "--case", "pooling", COLUMNS="100")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert max(len(line) for line in lines) > 80  # not rich's 80-column default


def test_a_bad_redis_url_fails_before_the_lab_runs(
    capsys: pytest.CaptureFixture[str], lab_runs: list[list[str]]
) -> None:
    for bad in ("localhost:6379", "redis://:pa#ss@127.0.0.1:6379/0"):
        assert main(["lab", "--quick", "--case", "pooling", "--redis", bad]) == 2
        err = capsys.readouterr().err
        assert "error:" in err
        assert "pa#ss" not in err
    assert lab_runs == []
