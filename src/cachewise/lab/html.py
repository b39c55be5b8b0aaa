"""A self-contained HTML report: one inline-SVG chart per case, no scripts, no network.

It opens with the run (seed, database, store, date) and the Summary; each data kind
then has its chart and its table with every measured column, units in the headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from cachewise.lab.columns import COLUMNS, for_objective
from cachewise.lab.runner import CaseResult, KindResult

_BY_METRIC = {c.metric: c for c in COLUMNS}
_CHART_METRICS: tuple[tuple[str, str], ...] = (
    ("source_reads", "source reads"),
    ("source_writes", "source writes"),
    ("read_p99_us", "read p99 µs"),
    ("write_p99_us", "write p99 µs"),
    ("stale_reads", "stale reads"),
    ("lost_writes", "lost writes"),
)
_LABEL_W = 230
_COL_W = 150
_ROW_H = 22
_HEAD_H = 28

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:1px solid #ccc}
.dim{color:#666}.ok{color:#187a2f;font-weight:bold}.bad{color:#b3261e;font-weight:bold}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
td,th{border:1px solid #ddd;padding:.2rem .45rem;text-align:right}
td:first-child,th:first-child{text-align:left}tr.win{background:#e6f4ea}
table.summary td,table.summary th{text-align:left}
"""


def _fmt(metric: str, value: float) -> str:
    return _BY_METRIC[metric].cell(value)


def chart(kr: KindResult) -> str:
    """Small multiples: one bar column per metric, one row per strategy (winner first)."""
    ranking = kr.decision.ranking
    width = _LABEL_W + _COL_W * len(_CHART_METRICS)
    height = _HEAD_H + _ROW_H * len(ranking) + 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-size="12" role="img" aria-label="{escape(kr.kind.name)} chart">'
    ]
    for col, (metric, label) in enumerate(_CHART_METRICS):
        x = _LABEL_W + col * _COL_W
        parts.append(f'<text x="{x}" y="16" font-weight="bold">{escape(label)}</text>')
        top = max(float(kr.results[s].get(metric, 0)) for s in ranking) or 1.0
        for row, strategy in enumerate(ranking):
            value = float(kr.results[strategy].get(metric, 0))
            y = _HEAD_H + row * _ROW_H
            bar = (_COL_W - 60) * value / top
            color = "#2e7d32" if strategy == kr.decision.winner else "#7a8ca3"
            parts.append(
                f'<rect x="{x}" y="{y + 3}" width="{bar:.1f}" height="{_ROW_H - 8}" '
                f'fill="{color}"/>'
                f'<text x="{x + bar + 4:.1f}" y="{y + 15}">{escape(_fmt(metric, value))}</text>'
            )
    for row, strategy in enumerate(ranking):
        y = _HEAD_H + row * _ROW_H + 15
        weight = ' font-weight="bold"' if strategy == kr.decision.winner else ""
        mark = "★ " if strategy == kr.decision.winner else ""
        parts.append(f'<text x="4" y="{y}"{weight}>{escape(mark + strategy)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(kr: KindResult) -> str:
    """Every strategy's measurements, the columns the objective decides by first."""
    columns = for_objective(kr.kind.objective)
    heads = ["strategy", *(f"{c.header} ({c.unit})" if c.unit else c.header for c in columns)]
    rows = ["<tr>" + "".join(f"<th>{escape(h)}</th>" for h in [*heads, "why not"]) + "</tr>"]
    for s in kr.decision.ranking:
        cls = ' class="win"' if s == kr.decision.winner else ""
        metrics = kr.results[s]
        cells = "".join(f"<td>{c.cell(float(metrics.get(c.metric, 0)))}</td>" for c in columns)
        why = escape(kr.decision.reasons.get(s, ""))
        rows.append(f"<tr{cls}><td>{escape(s)}</td>{cells}<td>{why}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _summary(cases: list[CaseResult]) -> str:
    """The Summary table: one row per case and kind, as the terminal report ends."""
    heads = ["case", "data", "recommended (measured)", "workshop", "", "runner-up costs"]
    rows = ["<tr>" + "".join(f"<th>{escape(h)}</th>" for h in heads) + "</tr>"]
    for case in cases:
        for kr in case.kinds:
            d = kr.decision
            agree = kr.kind.workshop == d.winner
            verdict = '<span class="ok">✓</span>' if agree else '<span class="bad">✗</span>'
            runner = f"{d.runner_up}: {kr.cost}" if d.runner_up else ""
            rows.append(
                f"<tr><td>{escape(case.name)}</td>"
                f"<td>{escape(kr.kind.name)}</td><td><b>{escape(d.winner)}</b></td>"
                f"<td>{escape(kr.kind.workshop)}</td><td>{verdict}</td>"
                f"<td>{escape(runner)}</td></tr>"
            )
    return '<table class="summary">' + "".join(rows) + "</table>"


def _run_line(meta: Mapping[str, Any]) -> str:
    """Seed, mode, database, store and date of the run, as the JSON report has them."""
    shown = [
        ("seed", meta.get("seed")),
        ("mode", None if "quick" not in meta else "quick" if meta["quick"] else "full"),
        ("database", meta.get("database")),
        ("store", meta.get("store")),
        ("date", meta.get("date")),
    ]
    parts = [f"<b>{name}:</b> {escape(str(value))}" for name, value in shown if value is not None]
    return f'<p class="run">{" · ".join(parts)}</p>' if parts else ""


def _kind(kr: KindResult) -> str:
    d = kr.decision
    agree = kr.kind.workshop == d.winner
    verdict = (
        '<span class="ok">✓ agrees</span>'
        if agree
        else f'<span class="bad">✗ differs</span> ({escape(kr.workshop_cost or "")})'
    )
    out = [
        f"<h3>{escape(kr.kind.name)}</h3>",
        f"<p><b>objective:</b> {escape(kr.kind.objective.summary)}<br>"
        f'<span class="dim">{escape(kr.kind.objective.describe())}</span></p>',
        chart(kr),
        f"<p><b>recommended:</b> {escape(d.winner)}<br>",
    ]
    if d.runner_up:
        out.append(f"<b>runner-up:</b> {escape(d.runner_up)} — {escape(kr.cost)}<br>")
    out.append(f"<b>workshop:</b> {escape(kr.kind.workshop)} {verdict}</p>")
    for strategy, lost in kr.journal_lost.items():
        plain = int(kr.results[strategy]["lost_writes"])
        out.append(
            f"<p>SIGKILL: {escape(strategy)} lost {plain} acknowledged writes without a "
            f"journal, {lost} with journal fsync='always'.</p>"
        )
    out.append(_table(kr))
    return "\n".join(out)


def render(
    cases: list[CaseResult], meta: Mapping[str, Any] | None = None, title: str = "cachewise lab"
) -> str:
    """The whole report as one HTML document (inline CSS and SVG only).

    ``meta`` is the run's description (seed, quick, database, store, date), as the
    JSON report carries it; the database URL in it is already redacted.
    """
    body = [f"<h1>{escape(title)}</h1>", _run_line(meta or {})]
    body.append(
        '<p class="dim">Every candidate strategy run on the same seeded workload against '
        "a real database; the recommendation is computed from the measurements and the "
        "case's objective.</p>"
    )
    body.append("<h2>Summary</h2>")
    body.append(_summary(cases))
    for case in cases:
        body.append(f'<h2 id="{escape(case.name)}">{escape(case.name)}: {escape(case.title)}</h2>')
        body.append(f'<p class="dim">{escape(case.story)}</p>')
        body.extend(_kind(kr) for kr in case.kinds)
        body.extend(f'<p class="dim">note: {escape(n)}</p>' for n in case.notes)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(part for part in body if part)
        + "</body></html>\n"
    )
