"""The background side of a write-back runtime: the flush thread, one flush at a time, exit.

Shared by the in-process runtime (``flusher.Flusher``) and the Redis-backed one
(``shared.SharedFlusher``): both flush every ``flush_interval`` seconds and when woken,
back off with ``policy.retry`` after a failure, run one flush at a time per process with
a bounded wait, and are flushed at interpreter exit. ``write_batch`` is the I/O of one
flush batch for both, timed into their histograms (and traced when spans are on).
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from cachewise import _tracing
from cachewise._events import event
from cachewise._types import Key
from cachewise.errors import FlushError
from cachewise.policies import WriteBack
from cachewise.sources.base import Source
from cachewise.stats import KEYS, Histogram

logger = logging.getLogger("cachewise.writeback")

T = TypeVar("T")


class BatchTimes:
    """The flush batches of one runtime: how long each took and how many keys it had."""

    def __init__(self, name: str) -> None:
        self.seconds = Histogram(name="flush_seconds", attributes={"cache": name})
        self.keys = Histogram(KEYS, name="flush_keys", attributes={"cache": name})


def write_batch(
    source: Source, saves: Mapping[Key, Any], removes: list[Key], times: BatchTimes, name: str
) -> None:
    """One batch to the source: one ``save_many`` and one ``remove_many``, timed."""
    started = time.monotonic()
    if _tracing.tracer is None:
        _write(source, saves, removes)
    else:
        attributes = {"cache": name, "keys": len(saves) + len(removes)}
        _tracing.traced("cachewise.flush", attributes, _write, source, saves, removes)
    times.seconds.observe(time.monotonic() - started)
    times.keys.observe(len(saves) + len(removes))


def _write(source: Source, saves: Mapping[Key, Any], removes: list[Key]) -> None:
    if saves:
        source.save_many(saves)
    if removes:
        source.remove_many(removes)


class FlushLoop:
    """A daemon thread that calls ``flush()`` when woken or every interval, with backoff.

    ``pending()`` tells whether there is anything to flush (a failure there counts as a
    failed flush). ``exclusive`` runs a flush under the per-process flush lock.
    """

    def __init__(
        self,
        policy: WriteBack,
        flush: Callable[[], object],
        pending: Callable[[], bool],
        *,
        wake: threading.Event | None = None,
        rng: random.Random | None = None,
        name: str = "cachewise",
        backlog: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.policy = policy
        self._flush = flush
        self._pending = pending
        self.wake = wake if wake is not None else threading.Event()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._stopped = False
        self.attempt = 0
        """Consecutive failed background flushes (0 after a success)."""
        self._name = name
        self._backlog = backlog
        self._outage_since = 0.0
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name=f"{name}-flusher", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def exclusive(self, flush: Callable[[], int], *, wait: bool = True) -> int:
        """Run ``flush`` while no other flush of this runtime runs in this process.

        With ``wait=False`` a flush already under way wakes the thread and returns 0;
        with ``wait=True`` a flush running for over ``flush_timeout`` raises FlushError.
        """
        if not wait and not self._lock.acquire(blocking=False):
            self.wake.set()
            return 0
        if wait and not self._lock.acquire(timeout=self.policy.flush_timeout):
            raise FlushError(f"a flush has been running for over {self.policy.flush_timeout}s")
        try:
            return flush()
        finally:
            self._lock.release()

    def _run(self) -> None:
        interval = self.policy.flush_interval
        delay = interval
        while True:
            self.wake.wait(delay)
            self.wake.clear()
            if self._stopped:
                return
            try:
                if not self._pending():
                    self._recovered(0)  # another flush (``flush()``, another process) did it
                    delay = interval
                    continue
                written = self._flush()
            except Exception as exc:
                self.attempt += 1
                delay = self.policy.retry.delay(self.attempt, self._rng)
                self._failed(exc, delay)
            else:
                self._recovered(written if isinstance(written, int) else 0)
                delay = interval

    def _failed(self, exc: Exception, delay: float) -> None:
        """Log the first failure of an outage (with its traceback); later ones at DEBUG."""
        root: BaseException = exc
        while root.__cause__ is not None:  # FlushError <- SourceError <- the driver's error
            root = root.__cause__
        error = type(root).__name__
        self._last_error = error
        fields: dict[str, Any] = {
            "cache": self._name,
            "attempt": self.attempt,
            "error": error,
            "retry_in": round(delay, 3),
            "keys": self._backlog(),
        }
        if self.attempt == 1:
            self._outage_since = time.monotonic()
            event(
                logger,
                logging.WARNING,
                "flush_failed",
                "write-back %s: flush failed (%s); %s dirty keys kept, retrying with backoff; "
                "logged once until it recovers",
                self._name,
                error,
                fields["keys"],
                exc_info=True,
                **fields,
            )
        else:
            event(
                logger,
                logging.DEBUG,
                "flush_retry_failed",
                "write-back %s: flush attempt %d failed (%s); retrying in %.2fs",
                self._name,
                self.attempt,
                error,
                delay,
                **fields,
            )

    def _recovered(self, written: int) -> None:
        """After an outage: one summary (how long, how many attempts, the last error)."""
        if self.attempt == 0:
            return
        seconds = time.monotonic() - self._outage_since
        event(
            logger,
            logging.INFO,
            "flush_recovered",
            "write-back %s: flushing again after %.1fs and %d failed attempts (last error %s); "
            "%d keys written",
            self._name,
            seconds,
            self.attempt,
            self._last_error,
            written,
            cache=self._name,
            attempts=self.attempt,
            seconds=round(seconds, 3),
            error=self._last_error,
            keys=written,
        )
        self.attempt = 0

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the flush it is running, if any), waiting up to ``timeout``."""
        self._stopped = True
        self.wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class Closeable(Protocol):
    """A runtime flushed and closed at interpreter exit."""

    def close(self) -> None:
        """Flush and stop."""
        ...


_OPEN: weakref.WeakSet[Closeable] = weakref.WeakSet()


def close_at_exit(runtime: Closeable) -> None:
    """Flush and close ``runtime`` at interpreter exit unless it was closed before."""
    _OPEN.add(runtime)


def closed(runtime: Closeable) -> None:
    """``runtime`` was closed: nothing left to do for it at exit."""
    _OPEN.discard(runtime)


@atexit.register
def _flush_at_exit() -> None:
    """Flush every open write-back at interpreter exit, logging (not raising) failures."""
    for runtime in list(_OPEN):
        try:
            runtime.close()
        except Exception as exc:
            event(
                logger,
                logging.ERROR,
                "flush_at_exit_failed",
                "write-back flush at exit failed",
                exc_info=True,
                error=type(exc).__name__,
            )
