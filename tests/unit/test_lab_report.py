"""The lab's terminal report at 80, 100 and 160 columns: nothing cut, every name whole.

Every case and kind is rendered from seeded, realistic measurements (latencies up to
seconds, counts in the hundreds of thousands), as the CLI prints them, at each width.
"""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console

from cachewise.lab import html, report
from cachewise.lab.cases import CASES
from cachewise.lab.columns import COLUMNS, for_objective
from cachewise.lab.objective import LABELS, cost, decide
from cachewise.lab.pooling import POOLING
from cachewise.lab.runner import CaseResult, KindResult

WIDTHS = (80, 100, 160)


def _metrics(rng: random.Random) -> dict[str, float]:
    return {
        "hit_ratio": rng.random(),
        "source_reads": rng.randrange(0, 400_000),
        "source_writes": rng.randrange(0, 400_000),
        "read_p50_us": rng.uniform(0.3, 50_000),
        "read_p99_us": rng.uniform(10, 2_500_000),
        "write_p50_us": rng.uniform(0.3, 50_000),
        "write_p99_us": rng.uniform(10, 2_500_000),
        "stale_reads": rng.randrange(0, 5_000),
        "lost_writes": rng.randrange(0, 5_000),
        "app_calls": rng.randrange(0, 900_000),
        "cache_ops": rng.randrange(0, 900_000),
        "evictions": rng.randrange(0, 90_000),
    }


def measured_cases(seed: int = 7) -> list[CaseResult]:
    rng = random.Random(seed)
    out = []
    for case in (*CASES, POOLING):
        kinds = []
        for kind in case.kinds:
            results = {s: _metrics(rng) for s in kind.candidates}
            decision = decide(results, kind.objective, list(kind.candidates))
            runner = decision.runner_up
            kinds.append(
                KindResult(
                    kind,
                    results,
                    decision,
                    cost(results, kind.objective, decision.winner, runner) if runner else "",
                    None,
                    {},
                )
            )
        out.append(CaseResult(case.name, case.title, case.story, "", {}, kinds, [], 1.0))
    return out


def render(width: int, cases: list[CaseResult]) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    for case in cases:
        report.print_case(console, case)
    report.print_overview(console, cases)
    return console.export_text()


@pytest.mark.parametrize("width", WIDTHS)
def test_nothing_is_cut_and_every_line_fits(width: int) -> None:
    cases = measured_cases()
    text = render(width, cases)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_every_strategy_name_and_recommendation_is_shown_whole(width: int) -> None:
    cases = measured_cases()
    lines = render(width, cases).splitlines()
    for case in cases:
        for kr in case.kinds:
            for strategy in kr.results:
                assert any(strategy in line for line in lines), strategy
            assert f"recommended: {kr.decision.winner}" in lines
    summary = lines[next(i for i, line in enumerate(lines) if "Summary" in line) :]
    for case in cases:
        for kr in case.kinds:  # the summary names every winner in full too
            assert any(kr.decision.winner in line and case.name in line for line in summary) or (
                f"  recommended: {kr.decision.winner}" in summary
            )


@pytest.mark.parametrize("width", WIDTHS)
def test_every_measured_number_is_printed_at_every_width(width: int) -> None:
    cases = measured_cases()
    text = render(width, cases)
    for case in cases:
        for kr in case.kinds:
            for metrics in kr.results.values():
                for column in COLUMNS:
                    assert column.cell(metrics[column.metric]) in text


def test_wide_terminals_get_one_table_narrow_ones_stack_it() -> None:
    case = measured_cases()[0]
    kr = case.kinds[0]
    wide = Console(width=200, file=io.StringIO())
    narrow = Console(width=80, file=io.StringIO())
    tables, with_reasons = report.kind_tables(wide, case, kr)
    assert (len(tables), with_reasons) == (1, True)
    tables, with_reasons = report.kind_tables(narrow, case, kr)
    assert len(tables) > 1
    assert not with_reasons
    assert all(report.fits(narrow, t) for t in tables)


def test_columns_cover_every_metric_an_objective_cites_deciding_ones_first() -> None:
    assert {c.metric for c in COLUMNS} == set(LABELS)
    for case in (*CASES, POOLING):
        for kind in case.kinds:
            order = [c.metric for c in for_objective(kind.objective)]
            criteria = list(dict.fromkeys(c.metric for c in kind.objective.criteria))
            assert order[: len(criteria)] == criteria
            assert sorted(order) == sorted(LABELS)


META = {
    "seed": 11,
    "quick": True,
    "database": "postgresql+psycopg://root:***@db/shop",
    "store": "memory",
    "date": "2026-12-04T12:00:00+00:00",
}


def test_the_html_report_opens_with_the_run_and_the_summary() -> None:
    cases = measured_cases()
    page = html.render(cases, META)
    summary = page.index("<h2>Summary</h2>")
    first_case = page.index(f'<h2 id="{cases[0].name}">')
    assert summary < first_case
    for value in ("11", "quick", "postgresql+psycopg://root:***@db/shop", "memory", "2026-12-04"):
        assert value in page[:summary]
    table = page[summary:first_case]
    for case in cases:
        for kr in case.kinds:
            assert f'<td data-label="recommended"><b>{kr.decision.winner}</b></td>' in table
            assert f'<td data-label="data">{kr.kind.name}</td>' in table


def test_the_html_tables_show_every_column_a_reason_cites_with_units() -> None:
    cases = measured_cases()
    page = html.render(cases, META)
    for header in ("read p50 (µs)", "write p99 (µs)", "app calls", "cache ops", "evict"):
        assert f"<th>{header}</th>" in page
    for case in cases:
        for kr in case.kinds:
            for metrics in kr.results.values():
                for column in COLUMNS:
                    assert f"<td>{column.cell(metrics[column.metric])}</td>" in page
            for reason in kr.decision.reasons.values():  # "app calls 1481 vs 1267", ...
                assert any(reason.startswith(LABELS[c.metric] + " ") for c in COLUMNS), reason


def test_the_html_report_is_self_contained() -> None:
    page = html.render(measured_cases(), META)
    for external in ("<script", "src=", "href=", "@import", "url("):
        assert external not in page
