"""``cachewise aggregate refresh|status``: the command a crontab runs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from cachewise import Aggregate, connect
from cachewise.cli import main
from cachewise.errors import ConfigurationError


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def events(url: str, unique_name: str) -> Iterator[str]:
    engine = connect(url)
    table = f"{unique_name}_ev"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, page VARCHAR(20))"))
        conn.execute(
            sa.text(f"INSERT INTO {table} (id, page) VALUES (:i, :p)"),
            [{"i": i, "p": "home" if i % 2 else "about"} for i in range(10)],
        )
    try:
        yield table
    finally:
        try:
            with contextlib.suppress(ConfigurationError):
                Aggregate.existing(engine, f"{unique_name}_pv", check_interval=None).drop()
        finally:
            cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}{cascade}"))
            engine.dispose()


def test_refresh_defines_then_refreshes_by_name(
    url: str, events: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"{unique_name}_pv"
    query = f"SELECT page, COUNT(*) AS views FROM {events} GROUP BY page"
    assert main(["aggregate", "refresh", name, "--database", url]) == 2
    assert "no aggregate named" in capsys.readouterr().err
    code = main(
        ["aggregate", "refresh", name, "--database", url, "--query", query, "--key", "page"]
    )
    assert code == 0
    assert main(["aggregate", "refresh", name, "--database", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["generation"] == 2  # created (1), then refreshed by name alone (2)
    assert report["last_error"] is None
    with Aggregate.existing(url, name) as agg:
        assert agg.read("home")["views"] == 5
    assert main(["aggregate", "status", name, "--database", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["generation"] == 2


def test_failed_refresh_exits_1_and_usage_errors_exit_2(
    url: str, events: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"{unique_name}_pv"
    query = f"SELECT page, id FROM {events} WHERE id < 2"
    assert (
        main(["aggregate", "refresh", name, "--database", url, "--query", query, "--key", "page"])
        == 0
    )
    engine = connect(url)
    with engine.begin() as conn:  # now "home" appears twice: the key is no longer unique
        conn.execute(sa.text(f"UPDATE {events} SET page = 'home' WHERE id = 0"))
    engine.dispose()
    capsys.readouterr()
    assert main(["aggregate", "refresh", name, "--database", url]) == 1
    assert "refresh failed" in capsys.readouterr().err
    assert main(["aggregate", "status", name, "--database", url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["generation"] == 1
    assert status["last_error"]
    assert main(["aggregate", "refresh", name, "--database", url, "--key", "page"]) == 2
    assert main(["aggregate", "refresh", name, "--database", url, "--query", query]) == 2
    assert main(["aggregate", "refresh", "bad-name", "--database", url]) == 2
