"""The lab's HTML report in a real browser (headless Chromium, driven by Playwright).

A real quick lab run on SQLite, and seeded extreme measurements (latencies of seconds,
counts in the hundreds of thousands), each rendered and opened at 1280 px (desktop) and
390 px (phone) widths. Checked as a reader would see it: the Summary before any chart
and on the first screen, every chart drawn with its axis, ticks, unit and both
strategies' bars (lengths in proportion to the values), no text cut or overlapping,
nothing wider than the window, no console error and no request leaving the page.

Full-page screenshots of the real run go to ``tmp_path``, and to
``$CACHEWISE_SCREENSHOTS`` when set (CI keeps them under bench/results/).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cachewise.lab import charts, html
from cachewise.lab.assemble import Environment
from cachewise.lab.cases import CASES
from cachewise.lab.database import Database
from cachewise.lab.objective import LABELS
from cachewise.lab.pooling import run_pooling
from cachewise.lab.runner import CaseResult, run_case
from tests.conftest import cannot_run
from tests.unit.test_lab_report import measured_cases

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Everything the assertions need, measured by the browser's own layout.
LAYOUT_JS = """() => {
  const w = window.innerWidth;
  const box = (el) => el.getBoundingClientRect();
  const overflow = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.scroll') && !el.classList.contains('scroll')) continue;
    if (el.closest('svg') && el.tagName !== 'svg') continue;
    const r = box(el);
    if (r.width > 0 && (r.right > w + 0.5 || r.left < -0.5)) {
      overflow.push(el.tagName + ' ' + (el.textContent || '').slice(0, 50));
    }
  }
  const charts = [...document.querySelectorAll('svg.chart')].map((svg) => {
    const b = box(svg);
    const texts = [...svg.querySelectorAll('text')];
    const rects = texts.map(box);
    const outside = texts.filter((t, i) => rects[i].left < b.left - 0.5 || rects[i].right >
      b.right + 0.5 || rects[i].top < b.top - 0.5 || rects[i].bottom > b.bottom + 0.5)
      .map((t) => t.textContent);
    const overlaps = [];
    for (let i = 0; i < rects.length; i++) for (let j = i + 1; j < rects.length; j++) {
      const p = rects[i], q = rects[j];
      if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom) {
        overlaps.push(texts[i].textContent + ' / ' + texts[j].textContent);
      }
    }
    return {
      label: svg.getAttribute('aria-label'), left: b.left, right: b.right, width: b.width,
      height: b.height, axes: svg.querySelectorAll('line.axis').length,
      ticks: [...svg.querySelectorAll('text.tick')].map((t) => t.textContent),
      unit: (svg.querySelector('text.unit') || {}).textContent,
      names: [...svg.querySelectorAll('text.name')].map((t) => t.textContent),
      values: [...svg.querySelectorAll('text.value')].map((t) => t.textContent),
      bars: [...svg.querySelectorAll('rect.bar')].map((r) => r.getBBox().width),
      smallestText: Math.min(...rects.map((r) => r.height)), outside, overlaps,
    };
  });
  const h2 = document.querySelector('h2');
  const first = document.querySelector('svg.chart');
  return {
    width: w, height: window.innerHeight, scrollWidth: document.documentElement.scrollWidth,
    overflow, charts, firstH2: h2 && h2.textContent, summaryTop: h2 && box(h2).top,
    firstChartTop: first && box(first).top,
  };
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's) under Playwright; skips, or fails under CI, without it."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright not installed (pip install -e '.[dev]')"
    if reason is None and not shutil.which(CHROMIUM):
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if reason is not None:
        cannot_run(reason)
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        yield p, profile


def _measure() -> list[CaseResult]:
    database = Database()
    try:
        env = Environment(database)
        cases = [run_case(case, env, quick=True) for case in CASES]
        cases.append(run_pooling(env, quick=True))
    finally:
        database.cleanup()
    return cases


@pytest.fixture(scope="module")
def lab_run() -> list[CaseResult]:
    """Every case of the lab measured once in quick mode on SQLite (as `lab --quick`).

    In a thread of its own: Playwright's sync API runs an event loop in this one, and a
    sync Cache inside a running loop warns (warnings are errors in this suite).
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_measure).result()


def _open(browser: Any, page_file: Path, width: int, height: int) -> tuple[Any, Any, list[str]]:
    p, profile = browser
    context = p.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=ARGS,
        viewport={"width": width, "height": height},
    )
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in {"error", "warning"}
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "request",
        lambda r: problems.append(f"request: {r.url}") if r.url != page_file.as_uri() else None,
    )
    page.goto(page_file.as_uri())
    return context, page, problems


def _check(cases: list[CaseResult], layout: dict[str, Any], problems: list[str]) -> None:
    assert problems == []
    assert layout["scrollWidth"] <= layout["width"], "the page scrolls sideways"
    assert layout["overflow"] == []
    assert layout["firstH2"] == "Summary"
    assert layout["summaryTop"] < layout["height"], "the Summary is not on the first screen"
    assert layout["summaryTop"] < layout["firstChartTop"]
    kinds = [(case, kr) for case in cases for kr in case.kinds]
    assert len(layout["charts"]) == len(kinds)
    for chart, (_case, kr) in zip(layout["charts"], kinds, strict=True):
        shown = charts.comparison(kr)
        metric = shown.criterion.metric
        where = f"{kr.kind.name}: {chart['label']}"
        assert chart["width"] > 200, where
        assert chart["height"] > 60, where
        assert chart["left"] >= 0, where
        assert chart["right"] <= layout["width"], where
        assert chart["axes"] == 1, where
        assert chart["ticks"][0] == "0", where
        assert len(chart["ticks"]) >= 3, where
        assert chart["unit"].startswith(LABELS[metric]), where
        assert f"({charts.UNITS[metric]})" in chart["unit"] or "(count)" in chart["unit"], where
        assert "is better" in chart["unit"], where
        assert [n.split(" (")[0].lstrip("★ ") for n in chart["names"]] == [
            s for _, s, _ in shown.bars
        ], where
        assert chart["values"] == [charts.value_label(metric, v) for _, _, v in shown.bars]
        assert chart["outside"] == [], where
        assert chart["overlaps"] == [], where
        assert chart["smallestText"] >= 8, f"{where}: text {chart['smallestText']:.1f} px high"
        # Bar lengths are in proportion to the values the table prints.
        values = [v for _, _, v in shown.bars]
        top = max(values)
        for bar, value in zip(chart["bars"], values, strict=True):
            longest = max(chart["bars"])
            expected = longest * value / top if top else 0.0
            assert abs(bar - expected) <= 0.5 + 0.01 * longest, where


def _screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("CACHEWISE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / name)
    return shot


@pytest.mark.parametrize("device", sorted(WIDTHS))
def test_a_real_lab_report_renders_whole_in_chromium(
    browser: Any, lab_run: list[CaseResult], device: str, tmp_path: Path
) -> None:
    meta = {"seed": 7, "quick": True, "database": "sqlite (temporary file)", "store": "memory"}
    page_file = tmp_path / "lab.html"
    page_file.write_text(html.render(lab_run, meta), encoding="utf-8")
    width, height = WIDTHS[device]
    context, page, problems = _open(browser, page_file, width, height)
    try:
        layout = page.evaluate(LAYOUT_JS)
        _screenshot(page, f"lab-report-{width}px.png", tmp_path)
    finally:
        context.close()
    _check(lab_run, layout, problems)


@pytest.mark.parametrize("device", sorted(WIDTHS))
def test_extreme_measurements_still_fit(browser: Any, device: str, tmp_path: Path) -> None:
    cases = measured_cases()
    meta = {"seed": 11, "database": "postgresql+psycopg://root:***@db/shop", "store": "redis"}
    page_file = tmp_path / "extreme.html"
    page_file.write_text(html.render(cases, meta), encoding="utf-8")
    context, page, problems = _open(browser, page_file, *WIDTHS[device])
    try:
        layout = page.evaluate(LAYOUT_JS)
    finally:
        context.close()
    _check(cases, layout, problems)
