"""Refresh schedules, the debouncer and the backoff: plain objects, driven with fake time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from cachewise import Cron, Every, OnChange
from cachewise.aggregates._runner import Runner
from cachewise.aggregates.schedules import Backoff, Debouncer, check_schedule
from cachewise.errors import ConfigurationError


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_every_is_now_plus_interval() -> None:
    assert Every(30).next_after(1000.0) == 1030.0
    assert Every(0.25).seconds == 0.25


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True, None])
def test_every_refuses_non_positive_or_non_numbers(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        Every(bad)  # type: ignore[arg-type]


def test_cron_next_tick_in_utc() -> None:
    cron = Cron("*/5 * * * *")
    assert cron.next_after(_ts("2026-01-01T10:02:30")) == _ts("2026-01-01T10:05:00")
    assert cron.next_after(_ts("2026-01-01T10:05:00")) == _ts("2026-01-01T10:10:00")
    daily = Cron("30 2 * * *")
    assert daily.next_after(_ts("2026-01-01T03:00:00")) == _ts("2026-01-02T02:30:00")


@pytest.mark.parametrize(
    "bad", ["", "* * * *", "* * * * * *", "61 * * * *", "*/0 * * * *", "a b c d e", 5]
)
def test_cron_refuses_bad_expressions(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        Cron(bad)  # type: ignore[arg-type]


def test_onchange_validates_tables_and_timings() -> None:
    spec = OnChange(tables=["events", "public.pages"], debounce=0.5)
    assert spec.tables == ("events", "public.pages")
    assert OnChange("events").tables == ("events",)
    for bad_tables in ([], ["ev ents"], ["x;drop table y"], ['"q"'], [1]):
        with pytest.raises(ConfigurationError):
            OnChange(tables=bad_tables)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        OnChange(tables=["t"], debounce=0)
    with pytest.raises(ConfigurationError):
        OnChange(tables=["t"], debounce=2.0, max_delay=1.0)
    with pytest.raises(ConfigurationError):
        OnChange(tables=["t"], poll=-1)


def test_check_schedule_refuses_other_objects() -> None:
    assert check_schedule(None) is None
    every = Every(1)
    assert check_schedule(every) is every
    with pytest.raises(ConfigurationError):
        check_schedule(5)
    with pytest.raises(ConfigurationError):
        check_schedule("*/5 * * * *")


def test_debouncer_coalesces_a_burst_into_one_due_time() -> None:
    deb = Debouncer(debounce=1.0, max_delay=100.0)
    assert deb.due_at() is None
    assert not deb.take(100.0)
    fired = 0
    # 1,000 changes, 10 ms apart: a burst that lasts 10 s of fake time.
    now = 0.0
    for _ in range(1000):
        now += 0.01
        deb.note_change(now)
        if deb.take(now):
            fired += 1
    # Nothing fires while changes keep coming closer than the debounce.
    assert fired == 0
    assert deb.pending
    assert not deb.take(now + 0.5)
    assert deb.take(now + 1.0)
    assert deb.due_at() is None  # the burst is closed


def test_debouncer_waits_for_quiet_but_caps_the_delay() -> None:
    deb = Debouncer(debounce=2.0, max_delay=5.0)
    deb.note_change(0.0)
    assert deb.due_at() == 2.0
    deb.note_change(1.5)
    assert deb.due_at() == 3.5
    deb.note_change(4.0)
    assert deb.due_at() == 5.0  # capped: first change + max_delay
    assert deb.take(5.0)


def test_default_max_delay_is_ten_debounces() -> None:
    deb = OnChange(tables=["t"], debounce=0.2).debouncer()
    assert deb.max_delay == pytest.approx(2.0)


def test_backoff_grows_with_jitter_and_caps_then_resets() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, rng=lambda: 1.0)
    assert [backoff.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.succeeded()
    assert backoff.failed() == 0.5
    low = Backoff(initial=1.0, maximum=60.0, rng=lambda: 0.0)
    assert low.failed() == 0.5  # jitter keeps at least half the ceiling


class _FakeClock:
    """Wall-clock seconds that jump ahead on every read: minutes pass in milliseconds."""

    def __init__(self, start: float, step: float) -> None:
        self.now = start
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += self.step
            return self.now


def _run_until(runner: Runner, done: Callable[[], bool], limit: float = 10.0) -> None:
    runner.start()
    deadline = time.monotonic() + limit
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)
    runner.stop()


def test_runner_fires_on_cron_ticks() -> None:
    clock = _FakeClock(_ts("2026-01-01T10:00:30"), step=7.0)
    fired: list[float] = []

    def attempt() -> bool:
        fired.append(clock.now)
        return True

    runner = Runner("t", Cron("* * * * *"), attempt, clock=clock, max_wait=0.001)
    _run_until(runner, lambda: len(fired) >= 3)
    assert len(fired) >= 3
    minutes = [int(t // 60) for t in fired]
    assert minutes == sorted(set(minutes))  # at most one refresh per cron minute
    assert all(t - m * 60 < 30 for t, m in zip(fired, minutes, strict=True))  # just after ticks


def test_runner_retries_a_failed_refresh_with_backoff_before_the_next_tick() -> None:
    clock = _FakeClock(0.0, step=2.0)
    outcomes = [False, False, True]
    calls: list[float] = []

    def attempt() -> bool:
        calls.append(clock.now)
        return outcomes[len(calls) - 1] if len(calls) <= len(outcomes) else True

    # Every 10 minutes: without retries the second attempt would come 600 s later.
    runner = Runner("t", Every(600), attempt, clock=clock, max_wait=0.001)
    _run_until(runner, lambda: len(calls) >= 3)
    assert len(calls) >= 3
    assert calls[2] - calls[0] < 120  # the retries came long before the next scheduled run
    assert calls[1] - calls[0] < 60  # backoff starts at 0.5 s (jittered), not an hour


def test_runner_debounces_watcher_changes_into_one_refresh() -> None:
    clock = _FakeClock(0.0, step=0.001)
    changes = iter([True] * 50 + [False] * 10_000)
    calls: list[float] = []

    class Burst:
        def wait(self, timeout: float) -> bool:
            return next(changes, False)

        def close(self) -> None:
            pass

    spec = OnChange(tables=["t"], debounce=0.5, max_delay=100.0)

    def attempt() -> bool:
        calls.append(clock.now)
        return True

    runner = Runner("t", spec, attempt, Burst(), clock=clock, max_wait=0.001)
    _run_until(runner, lambda: len(calls) >= 1)
    time.sleep(0.05)  # a second refresh, if any were wrongly due, would land by now
    runner.stop()
    assert len(calls) == 1  # 50 change notices, one refresh


def test_runner_catches_up_when_the_result_is_older_than_its_schedule() -> None:
    clock = _FakeClock(100_000.0, step=0.01)
    calls: list[float] = []

    def attempt() -> bool:
        calls.append(clock.now)
        return True

    # Last computed 1,000 s ago, due every 600 s: refresh now, not 600 s from now.
    runner = Runner("t", Every(600), attempt, clock=clock, max_wait=0.001, last_run=99_000.0)
    _run_until(runner, lambda: len(calls) >= 1)
    assert calls
    assert calls[0] < 100_000.0 + 60


def test_runner_onchange_refreshes_once_when_attached_to_an_existing_result() -> None:
    clock = _FakeClock(0.0, step=0.01)
    calls: list[float] = []

    class Quiet:
        def wait(self, timeout: float) -> bool:
            return False

        def close(self) -> None:
            pass

    def attempt() -> bool:
        calls.append(clock.now)
        return True

    spec = OnChange(tables=["t"], debounce=0.5)
    runner = Runner("t", spec, attempt, Quiet(), clock=clock, max_wait=0.001, last_run=-50.0)
    _run_until(runner, lambda: len(calls) >= 1)
    time.sleep(0.05)
    runner.stop()
    assert len(calls) == 1  # changes made while nobody watched are picked up, once
