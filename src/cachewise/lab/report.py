"""The terminal report: one rich table per case and data kind, the decision beside the workshop."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cachewise.lab.objective import alternatives
from cachewise.lab.runner import CaseResult, KindResult

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("hit_ratio", "hit"),
    ("source_reads", "src reads"),
    ("source_writes", "src writes"),
    ("read_p50_us", "read p50 µs"),
    ("read_p99_us", "read p99 µs"),
    ("write_p50_us", "write p50 µs"),
    ("write_p99_us", "write p99 µs"),
    ("stale_reads", "stale"),
    ("lost_writes", "lost"),
    ("app_calls", "app calls"),
    ("evictions", "evict"),
)


def _cell(metric: str, value: float) -> str:
    if metric == "hit_ratio":
        return f"{value:.0%}"
    if metric.endswith("_us"):
        return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
    return f"{int(value):,}"


WIDE = 150
"""Terminals at least this wide get the "why not" column; narrower ones get it below."""


def kind_table(case: CaseResult, kr: KindResult, *, why: bool = True) -> Table:
    """The measurements of every strategy for one data kind, the winner marked.

    ★ marks the recommendation, 2 the runner-up, W the workshop's answer.
    """
    decision = kr.decision
    title = f"{case.title} — {kr.kind.name}"
    table = Table(title=title, title_justify="left", header_style="bold", expand=False)
    table.add_column("strategy", no_wrap=True)
    for _, header in _COLUMNS:
        table.add_column(header, justify="right")
    if why:
        table.add_column("why not", overflow="fold", max_width=44)
    for strategy in decision.ranking:
        metrics = kr.results[strategy]
        mark = ""
        style = ""
        if strategy == decision.winner:
            mark, style = "★ ", "bold green"
        elif strategy == decision.runner_up:
            mark, style = "2 ", "yellow"
        if strategy == kr.kind.workshop:
            mark += "W "
        cells = [_cell(metric, float(metrics.get(metric, 0))) for metric, _ in _COLUMNS]
        if why:
            cells.append(decision.reasons.get(strategy, ""))
        table.add_row(Text(mark + strategy, style=style), *cells)
    return table


def summary_lines(kr: KindResult) -> list[Text]:
    """Winner, runner-up and its cost, the workshop's answer, the journal's effect."""
    d = kr.decision
    lines = [Text.assemble(("recommended: ", "bold"), (d.winner, "bold green"))]
    if d.runner_up:
        lines.append(Text(f"runner-up:   {d.runner_up} — {kr.cost}"))
    if kr.kind.workshop == d.winner:
        lines.append(Text.assemble("workshop:    ", (kr.kind.workshop, "bold"), " ✓ agrees"))
    else:
        extra = f" — it costs {kr.workshop_cost}" if kr.workshop_cost else ""
        lines.append(
            Text.assemble("workshop:    ", (kr.kind.workshop, "bold red"), f" ✗ differs{extra}")
        )
    # The best of each other write policy, then of the other read policy.
    writes = {s: s.partition("+")[2] or "invalidate" for s in kr.results}
    reads = {s: s.partition("+")[0] for s in kr.results}
    shown = {d.winner, d.runner_up}
    for family in (writes, reads):
        for strategy, text in alternatives(kr.results, kr.kind.objective, d, family):
            if strategy not in shown:
                shown.add(strategy)
                lines.append(Text(f"  instead:   {strategy} — {text}", style="dim"))
    for strategy, lost in kr.journal_lost.items():
        plain = int(kr.results[strategy]["lost_writes"])
        lines.append(
            Text(
                f"SIGKILL:     {strategy} lost {plain} acknowledged writes without a journal, "
                f"{lost} with journal fsync='always'"
            )
        )
    return lines


def print_case(console: Console, case: CaseResult) -> None:
    """Print one case: story, objective, table and decision per data kind, notes."""
    console.rule(f"[bold]{case.name}[/bold]: {case.title}")
    console.print(Text(case.story, style="dim"))
    for kr in case.kinds:
        console.print(Text.assemble(("objective: ", "bold"), kr.kind.objective.summary))
        console.print(Text(f"  ({kr.kind.objective.describe()})", style="dim"))
        wide = console.width >= WIDE
        console.print(kind_table(case, kr, why=wide))
        if not wide:
            for strategy in kr.decision.ranking:
                if strategy in kr.decision.reasons:
                    console.print(
                        Text(f"  why not {strategy}: {kr.decision.reasons[strategy]}", style="dim")
                    )
        for line in summary_lines(kr):
            console.print(line)
    for note in case.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    console.print(Text(f"{case.seconds:.1f} s", style="dim"))


def print_overview(console: Console, cases: list[CaseResult]) -> None:
    """One line per case and kind: measured recommendation against the workshop's."""
    table = Table(title="Summary", title_justify="left", header_style="bold")
    for header in ("case", "data", "recommended (measured)", "workshop", "", "runner-up costs"):
        table.add_column(header)
    for case in cases:
        for kr in case.kinds:
            agree = kr.kind.workshop == kr.decision.winner
            table.add_row(
                case.name,
                kr.kind.name,
                Text(kr.decision.winner, style="bold green"),
                kr.kind.workshop,
                Text("✓" if agree else "✗", style="green" if agree else "red"),
                f"{kr.decision.runner_up}: {kr.cost}" if kr.decision.runner_up else "",
            )
    console.print(table)
