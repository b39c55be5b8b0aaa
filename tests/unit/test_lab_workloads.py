"""Lab workloads, parameters, strategy names, JSON schema and HTML, without a database."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cachewise.cli.lab import parse_params
from cachewise.errors import ConfigurationError
from cachewise.lab import html, schema
from cachewise.lab.cases import CASES, STOCK
from cachewise.lab.objective import decide
from cachewise.lab.runner import CaseResult, KindResult
from cachewise.lab.strategies import ALL, Strategy
from cachewise.lab.workloads import History, Zipf

jsonschema = pytest.importorskip("jsonschema")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_seed_same_workload_other_seed_other(case: object) -> None:
    from cachewise.lab.scenario import Case

    assert isinstance(case, Case)
    params = case.params(True, {})
    one = case.build(params, random.Random("s1")).workload
    two = case.build(params, random.Random("s1")).workload
    three = case.build(params, random.Random("s2")).workload
    assert one.ops == two.ops
    assert one.ops != three.ops
    assert len(one.ops) == params["ops"]
    assert one.writes > 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reads_expect_the_last_acknowledged_version(case: object) -> None:
    from cachewise.lab.scenario import Case

    assert isinstance(case, Case)
    workload = case.build(case.params(True, {}), random.Random(3)).workload
    versions = {(op.table, op.key): op.version for ops in workload.seed_rows.values() for op in ops}
    for op in workload.ops:
        last = versions.get((op.table, op.key), 0)
        if op.kind in ("write", "race"):
            assert op.version == last + 1
            versions[(op.table, op.key)] = op.version
        else:
            assert op.version == last


def test_zipf_is_skewed_and_seeded() -> None:
    draws = Counter(Zipf(100, 1.2, random.Random(1)).draw() for _ in range(5000))
    top = draws.most_common(1)[0][1]
    assert top > 5000 / 100 * 10
    again = Counter(Zipf(100, 1.2, random.Random(1)).draw() for _ in range(5000))
    assert draws == again


def test_history_race_counts_as_a_write() -> None:
    h = History(("t",), 10)
    h.seed("t", "k", 10)
    op = h.race("t", "k", 10)
    assert op.version == 2
    assert h.read("t", "k").version == 2
    assert h.workload.writes == 1


def test_params_are_typed_and_checked() -> None:
    params = STOCK.params(False, {"write_share": "0.05", "tickers": "10"})
    assert params["write_share"] == 0.05
    assert params["tickers"] == 10
    assert STOCK.params(True, {})["ops"] < STOCK.params(False, {})["ops"]
    with pytest.raises(ConfigurationError, match="no parameter"):
        STOCK.params(False, {"nope": "1"})
    with pytest.raises(ConfigurationError, match="expected int"):
        STOCK.params(False, {"tickers": "many"})
    with pytest.raises(ConfigurationError, match="true or false"):
        CASES[3].params(False, {"cache_archive": "maybe"})


def test_param_option_parsing() -> None:
    assert parse_params(["stock-prices.write_share=0.1"]) == {
        "stock-prices": {"write_share": "0.1"}
    }
    for bad in ("stock-prices", "stock-prices.x", "nocase.x=1", "=1"):
        with pytest.raises(ConfigurationError):
            parse_params([bad])


def test_strategy_names_round_trip() -> None:
    assert len(ALL) == len(set(ALL)) == 8
    assert "cache-aside" in ALL
    assert "cache-aside+invalidate" not in ALL
    for name in ALL:
        assert Strategy.parse(name).name == name
    with pytest.raises(ConfigurationError):
        Strategy.parse("write-through")
    with pytest.raises(ConfigurationError):
        Strategy.parse("read-through+write-sideways")


def _fake_case() -> CaseResult:
    kind = STOCK.kinds[0]
    base = {
        "hit_ratio": 0.5,
        "source_reads": 10,
        "source_writes": 20,
        "read_p50_us": 1.5,
        "read_p99_us": 9.0,
        "write_p50_us": 5.0,
        "write_p99_us": 50.0,
        "stale_reads": 0,
        "lost_writes": 0,
        "app_calls": 30,
        "cache_ops": 20,
        "evictions": 0,
    }
    results = {s: dict(base, source_writes=20 + i) for i, s in enumerate(kind.candidates)}
    decision = decide(results, kind.objective, list(kind.candidates))
    kr = KindResult(kind, results, decision, "x", None, {"read-through+write-back": 0})
    return CaseResult("stock-prices", "t", "<story>", "w", {"ops": 1}, [kr], ["n"], 1.0)


def test_document_validates_against_the_schema() -> None:
    doc = schema.document([_fake_case()], {"seed": 1})
    jsonschema.validate(doc, schema.SCHEMA)
    result = doc["cases"][0]["data"][0]["results"][0]
    assert set(result) >= {"strategy", "hit_ratio", "source_reads", "lost_writes"}
    broken = schema.document([_fake_case()], {})
    del broken["cases"][0]["data"][0]["results"][0]["stale_reads"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema.SCHEMA)
    broken["cases"][0]["name"] = "not-a-case"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema.SCHEMA)


def test_html_is_self_contained_with_a_chart_per_kind() -> None:
    page = html.render([_fake_case()])
    assert page.count("<svg") == 1
    assert "<script" not in page
    assert "src=" not in page
    assert "href=" not in page
    assert "@import" not in page
    assert "&lt;story&gt;" in page


def test_stale_means_older_than_the_last_acknowledged_write() -> None:
    from cachewise.lab.metrics import is_stale

    assert not is_stale(None, 0)  # never written: absent is right
    assert is_stale(None, 1)
    assert is_stale({"v": 2}, 3)
    assert not is_stale({"v": 3}, 3)
    assert not is_stale({"v": 4}, 3)  # newer than expected is not stale


def test_percentile_by_nearest_rank() -> None:
    from cachewise.lab.metrics import percentile

    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.99) == 7.0
