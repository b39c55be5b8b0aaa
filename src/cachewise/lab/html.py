"""A self-contained HTML report: inline CSS and SVG, no scripts, no network.

It opens with the run (seed, database, store, date) and the Summary; each data kind
then has its chart (the recommendation against the runner-up on the metric that
decided, ``charts.py``) and its table with every measured column, units in the headers.
Readable at a phone's width: the Summary stacks, wide tables scroll in their own box.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from cachewise.lab import charts
from cachewise.lab.columns import for_objective
from cachewise.lab.runner import CaseResult, KindResult

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:1px solid #ccc}
h1,h2,h3,p{overflow-wrap:anywhere}
.dim{color:#666}.ok{color:#187a2f;font-weight:bold}.bad{color:#b3261e;font-weight:bold}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
td,th{border:1px solid #ddd;padding:.2rem .45rem;text-align:right}
td:first-child,th:first-child{text-align:left}tr.win{background:#e6f4ea}
table.summary td,table.summary th{text-align:left}
figure{margin:.8rem 0;max-width:560px}svg.chart{display:block;width:100%;height:auto}
figcaption{font-size:.85rem}
@media (max-width:640px){
body{margin:1rem}
table.summary,table.summary tbody,table.summary tr,table.summary td{display:block}
table.summary tr:first-child{display:none}
table.summary tr{border:1px solid #ddd;margin:.5rem 0;padding:.3rem}
table.summary td{border:none;padding:.1rem .2rem}
table.summary td::before{content:attr(data-label) ": ";color:#666}
}
"""


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
    return '<div class="scroll"><table>' + "".join(rows) + "</table></div>"


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
                f'<tr><td data-label="case">{escape(case.name)}</td>'
                f'<td data-label="data">{escape(kr.kind.name)}</td>'
                f'<td data-label="recommended"><b>{escape(d.winner)}</b></td>'
                f'<td data-label="workshop">{escape(kr.kind.workshop)}</td>'
                f'<td data-label="agrees">{verdict}</td>'
                f'<td data-label="runner-up">{escape(runner)}</td></tr>'
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
        else '<span class="bad">✗ differs</span>'
        + (f" ({escape(kr.workshop_cost)})" if kr.workshop_cost else "")
    )
    out = [
        f"<h3>{escape(kr.kind.name)}</h3>",
        f"<p><b>objective:</b> {escape(kr.kind.objective.summary)}<br>"
        f'<span class="dim">{escape(kr.kind.objective.describe())}</span></p>',
        charts.figure(kr),
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
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(part for part in body if part)
        + "</body></html>\n"
    )
