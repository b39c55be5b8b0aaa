"""The background refresher: one thread per scheduled aggregate, woken by time or change.

Why a plain thread and not APScheduler: an aggregate has exactly one job, the next due
time is one call (``Every``: arithmetic; ``Cron``: croniter), and the thread must also
wait on a change watcher. A thread waiting on an ``Event`` with a timeout does all of
that in a page, stops promptly on ``close()``, and adds no dependency.

Decisions (when to refresh, how long to back off) are the schedule objects'; this
module only waits and calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cachewise._events import event
from cachewise.aggregates._watch import Watcher
from cachewise.aggregates.schedules import Backoff, Cron, Debouncer, Every, OnChange
from cachewise.errors import CachewiseError

logger = logging.getLogger("cachewise.aggregates")

_SLICE = 1.0
"""Longest single wait: bounds how late a stop, or a wall-clock jump, is noticed."""


class Runner:
    """Calls ``attempt()`` when the schedule says; retries failures with backoff."""

    def __init__(
        self,
        name: str,
        schedule: Every | Cron | OnChange,
        attempt: Callable[[], bool],
        watcher: Watcher | None = None,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        max_wait: float = _SLICE,
        last_run: float | None = None,
    ) -> None:
        self._name = name
        self._schedule = schedule
        self._attempt = attempt
        self._watcher = watcher
        self._clock = clock
        self._max_wait = max_wait
        self._last_run = last_run
        self.stop_event = stop if stop is not None else threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"cachewise-aggregate-{name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait for it (a refresh in progress finishes first)."""
        self.stop_event.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # the thread must not die silently
            event(
                logger,
                logging.ERROR,
                "aggregate_thread_stopped",
                "aggregate %s: the refresh thread stopped on an error",
                self._name,
                exc_info=True,
                aggregate=self._name,
                error=type(exc).__name__,
            )

    def _loop(self) -> None:
        schedule = self._schedule
        stop = self.stop_event
        backoff = Backoff()
        timed = isinstance(schedule, (Every, Cron))
        debouncer: Debouncer | None = (
            schedule.debouncer() if isinstance(schedule, OnChange) else None
        )
        # Catch up: a result computed before the last due time is refreshed at once
        # (Every: ``last_run + seconds``; Cron: the first tick after ``last_run``).
        # OnChange cannot know what changed while nobody watched: one refresh to start.
        start = self._clock()
        next_at = (
            schedule.next_after(start if self._last_run is None else self._last_run)  # type: ignore[union-attr]
            if timed
            else None
        )
        if debouncer is not None and self._last_run is not None:
            debouncer.note_change(start)
        retry_at: float | None = None
        while not stop.is_set():
            now = self._clock()
            dues = [t for t in (next_at, retry_at) if t is not None]
            if debouncer is not None and (due := debouncer.due_at()) is not None:
                dues.append(due)
            timeout = min([self._max_wait, *(max(0.0, t - now) for t in dues)])
            if self._watcher is not None and debouncer is not None:
                if self._watch(timeout, backoff):
                    debouncer.note_change(self._clock())
            elif stop.wait(timeout):
                return
            if stop.is_set():
                return
            now = self._clock()
            fire = (next_at is not None and now >= next_at) or (
                retry_at is not None and now >= retry_at
            )
            if debouncer is not None and debouncer.take(now):
                fire = True
            if not fire:
                continue
            if self._attempt():
                backoff.succeeded()
                retry_at = None
            else:
                retry_at = self._clock() + backoff.failed()
            if timed:
                next_at = schedule.next_after(self._clock())  # type: ignore[union-attr]

    def _watch(self, timeout: float, backoff: Backoff) -> bool:
        """Wait on the watcher; a broken watcher is reopened after a backoff."""
        assert self._watcher is not None
        try:
            return self._watcher.wait(timeout)
        except CachewiseError as exc:
            delay = backoff.failed()
            event(
                logger,
                logging.WARNING,
                "aggregate_watcher_failed",
                "aggregate %s: change watcher failed (%s); retrying in %.1fs",
                self._name,
                exc,
                delay,
                aggregate=self._name,
                error=type(exc.__cause__ or exc).__name__,
                retry_in=round(delay, 3),
            )
            if self.stop_event.wait(delay):
                return False
            reopen = getattr(self._watcher, "open", None)
            if callable(reopen):
                try:
                    reopen()
                except CachewiseError:
                    return False
            # Changes may have been missed while the watcher was down: refresh.
            return True
