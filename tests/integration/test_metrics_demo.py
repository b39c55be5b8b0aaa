"""The metrics demo and the Grafana dashboard: every series the dashboard plots is served.

``python -m cachewise.metrics.demo`` runs in its own process on a free port, with a Redis
for the tiered caches; its /metrics is scraped over HTTP and parsed with
prometheus_client's own parser. DESIGN.md's names and labels are there, and every metric
an expression of docs/grafana-dashboard.json uses is one the scrape has.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

parser = pytest.importorskip("prometheus_client.parser")

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
DESIGN = {
    "cachewise_hits_total": "cache",
    "cachewise_misses_total": "cache",
    "cachewise_loads_total": "cache",
    "cachewise_source_reads_total": "cache",
    "cachewise_source_writes_total": "cache",
    "cachewise_evictions_total": "cache",
    "cachewise_dirty_keys": "cache",
    "cachewise_oldest_dirty_age_seconds": "cache",
    "cachewise_flush_failures_total": "cache",
    "cachewise_pool_checked_out": "pool",
    "cachewise_pool_waiting": "pool",
    "cachewise_pool_timeouts_total": "pool",
}


def _scrape(url: str, until: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                text: str = response.read().decode()
        except OSError:
            if time.monotonic() > until:
                raise
            time.sleep(0.1)
            continue
        if "cachewise_invalidation_lag_seconds_count" in text or time.monotonic() > until:
            return text
        time.sleep(0.2)


@pytest.mark.slow
def test_the_demo_serves_every_series_the_dashboard_plots(redis_url: str) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "cachewise.metrics.demo", "--port", "0", "--seconds", "60",
         "--redis", redis_url],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        line = demo.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line
        time.sleep(2)  # some traffic, a flush or two
        text = _scrape(match.group(0), time.monotonic() + 60)
    finally:
        demo.terminate()
        demo.wait(60)
        if demo.stdout is not None:
            demo.stdout.close()
    samples = {
        (s.name, tuple(sorted(s.labels))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }
    names = {name for name, _ in samples}
    for name, label in DESIGN.items():
        assert (name, (label,)) in samples, name
    assert samples[("cachewise_hits_total", ("cache",))] > 0

    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        metric
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for metric in re.findall(r"cachewise_[a-z0-9_]+", target["expr"])
    }
    assert used - names == set()
    assert len(used) >= 20
