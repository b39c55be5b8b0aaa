"""``cachewise pool URL`` probes a real database and prints what its pool saw."""

from __future__ import annotations

import json

import pytest

from cachewise.cli import main


def test_pool_command_reports_reuse_on_sqlite(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["pool", sqlite_url, "--threads", "3", "--requests", "20", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["errors"] == 0
    assert out["acquires"] == 60
    assert 1 <= out["opened"] <= 5  # sixty queries, a handful of connections


def test_pool_command_hides_the_password(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_url.replace("://root@", "://root:s3cret-pw@")
    code = main(["pool", url, "--threads", "2", "--requests", "5"])
    text = capsys.readouterr().out
    assert "s3cret-pw" not in text
    assert code == 0, text  # trust auth ignores the password
    assert "acquires" in text


def test_pool_command_refuses_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pool", "sqlite://", "--threads", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
