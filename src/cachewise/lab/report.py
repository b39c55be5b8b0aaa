"""The terminal report: one rich table per case and data kind, the decision beside the workshop."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from cachewise.lab.columns import Column, for_objective
from cachewise.lab.objective import alternatives
from cachewise.lab.runner import CaseResult, KindResult

WIDE = 150
"""Terminals at least this wide get the "why not" column; narrower ones get it below."""


def fits(console: Console, table: Table) -> bool:
    """Whether ``table`` fits the console at its natural width.

    Not its minimum: squeezing a table, rich narrows wrappable columns below their
    longest word and cuts it with "…".
    """
    unbounded = console.options.update_width(1 << 16)  # measure, not clamp to the console
    return Measurement.get(console, unbounded, table).maximum <= console.width


def kind_table(
    case: CaseResult,
    kr: KindResult,
    *,
    why: bool = True,
    columns: Sequence[Column] | None = None,
    title: bool = True,
    compact: bool = False,
) -> Table:
    """The measurements of every strategy for one data kind, the winner marked.

    ★ marks the recommendation, 2 the runner-up, W the workshop's answer. Each number
    column is exactly as wide as its widest number or header (``compact``: its widest
    header word, the header wrapping), so the table never squeezes a number.
    """
    decision = kr.decision
    shown = list(columns if columns is not None else for_objective(kr.kind.objective))
    table = Table(
        title=f"{case.title} — {kr.kind.name}" if title else None,
        title_justify="left",
        header_style="bold",
        expand=False,
        # Narrow terminals: a rule under the header only, no edges.
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        show_edge=not compact,
    )
    rows = [(_mark(kr, strategy), strategy) for strategy in decision.ranking]
    table.add_column("strategy", no_wrap=True, width=max(len(m + s) for (m, _), s in rows))
    for column in shown:
        cells = [column.cell(float(kr.results[s].get(column.metric, 0))) for s in decision.ranking]
        words = column.label.split() if compact else [column.label]
        table.add_column(column.label, justify="right", width=max(map(len, [*cells, *words])))
    if why:
        table.add_column("why not", overflow="fold", max_width=44)
    for (mark, style), strategy in rows:
        metrics = kr.results[strategy]
        cells = [column.cell(float(metrics.get(column.metric, 0))) for column in shown]
        if why:
            cells.append(decision.reasons.get(strategy, ""))
        table.add_row(Text(mark + strategy, style=style), *cells)
    return table


def _mark(kr: KindResult, strategy: str) -> tuple[str, str]:
    """The row's marks (★ winner, 2 runner-up, W the workshop's) and its style."""
    mark, style = "", ""
    if strategy == kr.decision.winner:
        mark, style = "★ ", "bold green"
    elif strategy == kr.decision.runner_up:
        mark, style = "2 ", "yellow"
    if strategy == kr.kind.workshop:
        mark += "W "
    return mark, style


def kind_tables(console: Console, case: CaseResult, kr: KindResult) -> tuple[list[Table], bool]:
    """The kind's table as wide as the console allows, stacked in parts when it is not.

    Returns the tables and whether the "why not" reasons are in them (else they are
    printed below). Columns are never cut: a column that does not fit starts a new table.
    """
    columns = for_objective(kr.kind.objective)
    whole = kind_table(case, kr, why=True, columns=columns)
    if console.width >= WIDE and fits(console, whole):
        return [whole], True
    for compact in (False, True):
        table = kind_table(case, kr, why=False, columns=columns, compact=compact)
        if fits(console, table):
            return [table], False
    groups: list[list[Column]] = [[]]
    for column in columns:
        trial = kind_table(case, kr, why=False, columns=[*groups[-1], column], compact=True)
        if groups[-1] and not fits(console, trial):
            groups.append([])
        groups[-1].append(column)
    tables = [
        kind_table(case, kr, why=False, columns=group, title=i == 0, compact=True)
        for i, group in enumerate(groups)
    ]
    return tables, False


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
        tables, with_reasons = kind_tables(console, case, kr)
        for table in tables:
            console.print(table)
        if not with_reasons:
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


def overview_table(cases: list[CaseResult]) -> Table:
    """One row per case and kind: measured recommendation against the workshop's."""
    table = Table(title="Summary", title_justify="left", header_style="bold")
    table.add_column("case", no_wrap=True)
    table.add_column("data", no_wrap=True)
    table.add_column("recommended (measured)", no_wrap=True)
    table.add_column("workshop", no_wrap=True)
    table.add_column("")
    table.add_column("runner-up costs")
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
    return table


def print_overview(console: Console, cases: list[CaseResult]) -> None:
    """The summary: a table where it fits, else one short block per case and kind."""
    table = overview_table(cases)
    if fits(console, table):
        console.print(table)
        return
    console.print(Text("Summary", style="bold"))
    for case in cases:
        for kr in case.kinds:
            d = kr.decision
            agree = kr.kind.workshop == d.winner
            console.print(Text(f"{case.name} · {kr.kind.name}", style="bold"))
            console.print(Text.assemble("  recommended: ", (d.winner, "bold green")))
            console.print(
                Text.assemble(
                    "  workshop:    ",
                    kr.kind.workshop,
                    (" ✓ agrees", "green") if agree else (" ✗ differs", "red"),
                )
            )
            if d.runner_up:
                console.print(Text(f"  runner-up:   {d.runner_up} — {kr.cost}", style="dim"))
