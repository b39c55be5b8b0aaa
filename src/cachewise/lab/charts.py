"""The HTML report's chart: the recommended strategy against the runner-up, inline SVG.

Per data kind, one horizontal bar chart on the metric that decided between the two
(the criterion that eliminated the runner-up, or the tie-breaker), with an x axis,
ticks, the metric's name and unit, and which way is better. The SVG scales with its
container (``viewBox``), so it fits a phone's width as well as a desktop's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from cachewise.lab.objective import LABELS, Criterion, deciding
from cachewise.lab.runner import KindResult

UNITS: dict[str, str] = {
    "hit_ratio": "%",
    "source_reads": "keys",
    "source_writes": "keys",
    "read_p50_us": "µs",
    "read_p99_us": "µs",
    "write_p50_us": "µs",
    "write_p99_us": "µs",
    "stale_reads": "reads",
    "lost_writes": "writes",
    "app_calls": "calls",
    "cache_ops": "operations",
    "evictions": "entries",
}
"""The unit of each metric an objective can cite, as the axis title shows it."""

WIDTH = 440
_LEFT = 10
_RIGHT = 96  # room for the value written after the longest bar
_TOP = 8
_ROW = 44
_BAR = 18
_AXIS = 46  # tick labels and the axis title under the bars


@dataclass(frozen=True)
class Comparison:
    """What a kind's chart shows: the metric, the bars, and why this metric."""

    criterion: Criterion
    bars: tuple[tuple[str, str, float], ...]
    """(role, strategy, value in the axis unit), the recommendation first."""
    why: str


def comparison(kr: KindResult) -> Comparison:
    """The recommendation against the runner-up on the metric that decided between them."""
    d = kr.decision
    criteria = kr.kind.objective.criteria
    if d.runner_up is None:
        crit = criteria[0]
        why = f"the only candidate, on the first criterion ({LABELS[crit.metric]})"
        strategies = [("recommended", d.winner)]
    else:
        found = deciding(kr.results, kr.kind.objective, d.winner, d.runner_up)
        if found is None:
            crit, why = criteria[0], "they tie on every criterion; the first is shown"
        elif found[1]:
            crit, why = found[0], f"decided by {LABELS[found[0].metric]}: {kr.cost}"
        else:
            crit, why = found[0], f"a tie within tolerance, broken by {LABELS[found[0].metric]}"
        strategies = [("recommended", d.winner), ("runner-up", d.runner_up)]
    scale = 100.0 if crit.metric == "hit_ratio" else 1.0
    bars = tuple(
        (role, s, float(kr.results[s].get(crit.metric, 0)) * scale) for role, s in strategies
    )
    return Comparison(crit, bars, why)


def ticks(top: float, *, whole: bool) -> list[float]:
    """Axis ticks from 0 past ``top``: 3 to 6 round steps (whole numbers for counts)."""
    top = max(top, 1.0)
    raw = top / 4
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    if whole:
        step = max(1.0, math.ceil(step))
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def tick_label(value: float) -> str:
    """A tick's number, short: ``0``, ``250``, ``2.5k``, ``1.2M``."""
    for limit, suffix in ((1e6, "M"), (1e4, "k")):
        if value >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def value_label(metric: str, value: float) -> str:
    """A bar's value with its unit (``147 keys``, ``34 µs``, ``100%``)."""
    unit = UNITS[metric]
    if unit == "%":
        return f"{value:.0f}%"
    shown = f"{value:,.1f}" if unit == "µs" and value < 10 else f"{value:,.0f}"
    return f"{shown} {unit}"


def svg(kr: KindResult) -> str:
    """The chart of one data kind as an inline ``<svg>`` element."""
    c = comparison(kr)
    metric = c.criterion.metric
    unit = UNITS[metric]
    steps = ticks(max(v for _, _, v in c.bars), whole=unit not in {"%", "µs"})
    if unit == "%":
        steps = [t for t in steps if t <= 100] or [0.0, 100.0]
    top = steps[-1]
    plot = WIDTH - _LEFT - _RIGHT
    axis_y = _TOP + _ROW * len(c.bars)
    height = axis_y + _AXIS
    better = "lower is better" if c.criterion.goal == "min" else "higher is better"
    label = LABELS[metric]
    shown_unit = "count" if label.endswith(unit) else unit  # not "lost writes (writes)"
    title = f"{label} ({shown_unit}), {better}"
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{escape(kr.kind.name)}: {escape(title)}" font-size="13">',
        f"<title>{escape(kr.kind.name)}: {escape(title)}</title>",
    ]
    for i, (role, strategy, value) in enumerate(c.bars):
        y = _TOP + i * _ROW
        bar = plot * value / top if top else 0.0
        winner = role == "recommended"
        mark = "★ " if winner else ""
        weight = ' font-weight="bold"' if winner else ""
        color = "#2e7d32" if winner else "#7a8ca3"
        parts.append(
            f'<text class="name" x="{_LEFT}" y="{y + 12}"{weight}>'
            f'{escape(mark + strategy)} <tspan fill="#555">({role})</tspan></text>'
            f'<rect class="bar" x="{_LEFT}" y="{y + 18}" width="{bar:.1f}" height="{_BAR}" '
            f'fill="{color}"/>'
            f'<text class="value" x="{_LEFT + bar + 5:.1f}" y="{y + 32}">'
            f"{escape(value_label(metric, value))}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{axis_y}" x2="{_LEFT + plot}" y2="{axis_y}" '
        'stroke="#333"/>'
    )
    for t in steps:
        x = _LEFT + plot * t / top
        anchor = "start" if t == 0 else "end" if t == top else "middle"
        parts.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 5}" stroke="#333"/>'
            f'<text class="tick" x="{x:.1f}" y="{axis_y + 18}" font-size="11" '
            f'text-anchor="{anchor}">{escape(tick_label(t))}</text>'
        )
    parts.append(
        f'<text class="unit" x="{_LEFT + plot / 2:.1f}" y="{axis_y + 38}" '
        f'text-anchor="middle" font-size="12">{escape(title)}</text></svg>'
    )
    return "".join(parts)


def figure(kr: KindResult) -> str:
    """The chart with a caption saying which metric decided and by how much."""
    c = comparison(kr)
    return f'<figure>{svg(kr)}<figcaption class="dim">{escape(c.why)}</figcaption></figure>'
