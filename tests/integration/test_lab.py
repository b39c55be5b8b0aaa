"""The lab end to end: every case in --quick mode against real SQLite (and PostgreSQL, Redis).

The recommendations are computed from measured counts and latencies; these tests
check that on each case's quick workload the measured winner is the workshop's answer,
that a changed workload changes an answer, that the JSON report validates against the
published schema, and that SIGKILL loses acknowledged writes with write-back and no
journal but none with a journal fsynced on every write.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachewise.cli import main
from cachewise.lab import crash, schema
from cachewise.lab.assemble import Environment
from cachewise.lab.cases import CASES, STOCK
from cachewise.lab.database import Database
from cachewise.lab.pooling import run_pooling
from cachewise.lab.runner import CaseResult, run_case

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def env() -> Iterator[Environment]:
    database = Database()
    yield Environment(database)
    database.cleanup()


@pytest.fixture(scope="module")
def measured(env: Environment) -> dict[str, CaseResult]:
    """Every case measured once in quick mode (the tests below share the results)."""
    out = {case.name: run_case(case, env, quick=True) for case in CASES}
    out["pooling"] = run_pooling(env, quick=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in CASES] + ["pooling"])
def test_quick_recommendation_is_the_workshops(measured: dict[str, CaseResult], name: str) -> None:
    case = measured[name]
    for kr in case.kinds:
        assert kr.decision.winner == kr.kind.workshop, (kr.kind.name, kr.decision.reasons)
        assert set(kr.results) == set(kr.kind.candidates) or name == "pooling"
        if kr.decision.runner_up:
            assert kr.cost


@pytest.mark.slow
def test_measured_counts_show_the_workshops_reasons(measured: dict[str, CaseResult]) -> None:
    def res(case: str, strategy: str) -> dict[str, float]:
        return measured[case].kinds[0].results[strategy]

    # Banking: write-through fills the cache with transactions nobody reads.
    assert res("banking", "read-through+write-through")["evictions"] > 0
    assert res("banking", "read-through+write-around")["evictions"] == 0
    assert (
        res("banking", "read-through+write-through")["source_reads"]
        > res("banking", "read-through+write-around")["source_reads"]
    )
    # Stock prices: write-back coalesces ticks into far fewer database writes.
    wb = res("stock-prices", "read-through+write-back")["source_writes"]
    assert res("stock-prices", "read-through+write-through")["source_writes"] > 2 * wb
    # Write-around leaves stale prices in the cache; EHR's textbook cache-aside races.
    assert res("stock-prices", "read-through+write-around")["stale_reads"] > 0
    assert res("ehr", "cache-aside")["stale_reads"] > 0
    assert res("ehr", "read-through+write-through")["stale_reads"] == 0
    # Write-back loses acknowledged writes on SIGKILL; write-through loses none.
    assert res("ehr", "read-through+write-back")["lost_writes"] > 0
    assert res("ehr", "read-through+write-through")["lost_writes"] == 0
    # CMS shared: read-through loads a burst's miss once, textbook cache-aside per reader.
    assert (
        res("cms-shared", "cache-aside")["source_reads"]
        > res("cms-shared", "read-through+invalidate")["source_reads"]
    )


@pytest.mark.slow
def test_the_json_document_of_every_case_validates(measured: dict[str, CaseResult]) -> None:
    doc = schema.document(list(measured.values()), {"seed": 7})
    jsonschema.validate(doc, schema.SCHEMA)
    assert [c["name"] for c in doc["cases"]] == [*(c.name for c in CASES), "pooling"]


@pytest.mark.slow
def test_a_read_heavy_stock_workload_changes_the_answer(
    measured: dict[str, CaseResult], env: Environment
) -> None:
    default = measured["stock-prices"].kinds[0].decision.winner
    changed = run_case(STOCK, env, quick=True, overrides={"write_share": "0.02"})
    winner = changed.kinds[0].decision.winner
    assert default == "read-through+write-back"
    assert winner != default
    # With few writes, write-back saves almost no database writes but still loses some.
    assert winner == "read-through+write-through"


@pytest.mark.slow
def test_editing_only_front_pages_makes_write_through_worth_it(env: Environment) -> None:
    case = CASES[3]
    result = run_case(case, env, quick=True, overrides={"hot_edit_share": "1.0"})
    kr = result.kinds[0]
    assert kr.decision.winner == "cache-aside+write-through"
    assert (
        kr.results["cache-aside+write-through"]["source_reads"]
        < kr.results["cache-aside"]["source_reads"]
    )


def test_counts_repeat_for_the_same_seed(env: Environment) -> None:
    from cachewise.lab.runner import run_strategy

    scenario = STOCK.build(STOCK.params(True, {"ops": "400"}), random.Random(9))
    kind = STOCK.kinds[0]
    counts = ("source_reads", "source_writes", "stale_reads", "lost_writes", "app_calls")
    for strategy in ("read-through+write-back", "cache-aside+write-around"):
        one = run_strategy(env, scenario, kind, strategy)
        two = run_strategy(env, scenario, kind, strategy)
        assert {c: one[c] for c in counts} == {c: two[c] for c in counts}


def test_sigkill_loses_writes_without_journal_and_none_with_fsync_always(
    env: Environment,
) -> None:
    assert crash.journal_available()  # part of the package: its absence is a bug, not a skip
    scenario = STOCK.build(STOCK.params(True, {"ops": "600"}), random.Random(5))
    kind = STOCK.kinds[0]
    plain = crash.measure_loss(env, scenario, kind, "read-through+write-back")
    journaled = crash.measure_loss(env, scenario, kind, "read-through+write-back", journal=True)
    through = crash.measure_loss(env, scenario, kind, "read-through+write-through")
    assert plain > 0
    assert journaled == 0
    assert through == 0


def test_cli_writes_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "lab.json"
    out_html = tmp_path / "lab.html"
    code = main(
        ["lab", "--quick", "--case", "pooling", "--json", str(out_json), "--html", str(out_html)]
    )
    assert code == 0
    doc = json.loads(out_json.read_text())
    jsonschema.validate(doc, schema.SCHEMA)
    assert doc["cases"][0]["data"][0]["recommended"] == "pool"
    page = out_html.read_text()
    assert "<svg" in page
    assert "<script" not in page
    assert "recommended" in capsys.readouterr().out


def test_cli_reports_an_unreachable_database_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://lab:s3cret-pw@127.0.0.1:1/nothing"
    assert main(["lab", "--quick", "--case", "pooling", "--database", url]) == 1
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err
    assert "s3cret-pw" not in err


def test_cli_rejects_bad_params(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--quick", "--case", "ehr", "--param", "ehr.nope=1"]) == 2
    assert "no parameter" in capsys.readouterr().err
    assert main(["lab", "--quick", "--case", "ehr", "--param", "banking.ops=5"]) == 2


@pytest.mark.postgres
def test_pooling_on_postgresql_opens_one_connection_with_the_pool(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        result = run_pooling(Environment(database), quick=True)
    finally:
        database.cleanup()
    kr = result.kinds[0]
    assert kr.results["new-connection"]["connections_opened"] == kr.results["pool"]["source_reads"]
    assert kr.results["pool"]["connections_opened"] <= 5
    # Every contender reads in autocommit (one round trip), so the pool no longer pays a
    # BEGIN and a ROLLBACK that Django's persistent connection does not. The two are then
    # both pools, a checkout apart (tens of µs): which of them wins on p50 is the shared
    # machine's noise (CI saw each win), so the test asserts what is not noise: a pool
    # wins, far ahead of a connection per request and of every external pooler.
    assert kr.decision.winner in {"pool", "django-persistent"}, kr.decision.reasons
    p50 = {name: r["read_p50_us"] for name, r in kr.results.items()}
    for slower in ("new-connection", "pgbouncer", "pgpool"):
        if slower in p50:
            assert p50["pool"] < p50[slower], (slower, p50)
    # Django's implicit pooling: one persistent connection for the (one) thread.
    assert kr.results["django-persistent"]["connections_opened"] == 1
    # The poolers are measured when the lab could start them, and said so either way.
    for pooler in ("pgbouncer", "pgpool"):
        assert any(note.startswith(f"{pooler}:") for note in result.notes)
        if pooler in kr.results:
            measured = kr.results[pooler]
            assert measured["connections_opened"] == measured["source_reads"]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_case_on_postgresql(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        result = run_case(CASES[4], Environment(database), quick=True, overrides={"ops": "500"})
    finally:
        database.cleanup()
    kr = result.kinds[0]
    assert kr.decision.winner == "read-through+write-through"
    assert kr.results["read-through+write-back"]["lost_writes"] > 0


@pytest.mark.redis
@pytest.mark.slow
def test_a_case_with_redis_as_the_store(redis_url: str) -> None:
    database = Database()
    try:
        result = run_case(
            CASES[2],
            Environment(database, redis_url=redis_url),
            quick=True,
        )
    finally:
        database.cleanup()
    kr = result.kinds[0]
    assert kr.decision.winner == "read-through+write-through"
    assert any("Redis" in note for note in result.notes)


@pytest.mark.slow
def test_the_lab_runs_on_a_redis_cluster(
    redis_cluster_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "lab.json"
    args = ["lab", "--quick", "--case", "ehr", "--redis", redis_cluster_url, "--json", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["store"] == "redis"
    assert "ehr" in capsys.readouterr().out.lower()


@pytest.mark.slow
def test_a_case_with_memcached_as_the_store(
    memcached_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "lab.json"
    args = ["lab", "--quick", "--case", "ehr", "--store", memcached_url, "--json", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["store"] == "memcached"
    (case,) = doc["cases"]
    assert any("memcached" in note for note in case["notes"])
    assert main(["lab", "--quick", "--case", "ehr", "--store", "ftp://x"]) == 2
    assert "--store takes" in capsys.readouterr().err


def test_the_journal_repairs_after_the_labs_own_kills_are_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The lab SIGKILLs its crash children on purpose; trimming their preallocated
    # segments on recovery is expected, and must not fill the reader's terminal.
    database = Database()
    try:
        with caplog.at_level(logging.WARNING, logger="cachewise"):
            result = run_case(CASES[4], Environment(database), quick=True)
    finally:
        database.cleanup()
    assert result.kinds[0].journal_lost  # a journaled write-back was killed and recovered
    assert [r.getMessage() for r in caplog.records if r.name == "cachewise.journal"] == []
