"""Refresh schedules for aggregates, as plain objects without I/O.

``Every`` and ``Cron`` say when the next refresh is due; ``OnChange`` says which source
tables to watch and how long to wait for a burst of changes to settle. ``Debouncer``
and ``Backoff`` are the decisions the background runner drives: they take the time as
an argument, so they are tested without sleeping.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from croniter import CroniterBadCronError, croniter

from cachewise._types import backoff, check_seconds
from cachewise.errors import ConfigurationError

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


@dataclass(frozen=True)
class Every:
    """Refresh every ``seconds`` seconds, measured from the end of the previous attempt."""

    seconds: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", check_seconds(self.seconds, "Every(seconds)"))

    def next_after(self, now: float) -> float:
        """Return the wall-clock time (epoch seconds) of the refresh due after ``now``."""
        return now + self.seconds


@dataclass(frozen=True)
class Cron:
    """Refresh at the times a five-field cron expression names (UTC), e.g. ``*/5 * * * *``.

    Parsing and the next-time computation are croniter's; an expression it refuses is a
    ``ConfigurationError`` at construction.
    """

    expression: str

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ConfigurationError(f"Cron expression must be a str, got {self.expression!r}")
        fields = self.expression.split()
        if len(fields) != 5:
            raise ConfigurationError(
                f"Cron expression must have 5 fields (minute hour day month weekday), "
                f"got {self.expression!r}"
            )
        try:
            croniter(self.expression)
        except (CroniterBadCronError, ValueError, KeyError) as exc:
            raise ConfigurationError(f"bad cron expression {self.expression!r}: {exc}") from exc

    def next_after(self, now: float) -> float:
        """Return the wall-clock time (epoch seconds) of the first cron tick after ``now``."""
        start = datetime.fromtimestamp(now, tz=timezone.utc)
        return float(croniter(self.expression, start).get_next(float))


@dataclass(frozen=True, init=False)
class OnChange:
    """Refresh when the source ``tables`` change, once a burst has been quiet ``debounce`` s.

    A steady stream of changes still refreshes at least every ``max_delay`` seconds
    (default ten debounces), so the aggregate never falls arbitrarily far behind.
    ``poll`` is how often SQLite and MariaDB look at their change counter (PostgreSQL
    is told by NOTIFY and does not poll).
    """

    tables: tuple[str, ...]
    debounce: float = 2.0
    max_delay: float | None = None
    poll: float = 0.25
    _max: float = field(repr=False, compare=False, default=0.0)

    def __init__(
        self,
        tables: Iterable[str],
        debounce: float = 2.0,
        max_delay: float | None = None,
        poll: float = 0.25,
    ) -> None:
        if isinstance(tables, str):
            tables = [tables]
        names = tuple(tables)
        if not names:
            raise ConfigurationError("OnChange needs at least one source table")
        for name in names:
            if not isinstance(name, str) or not _TABLE.match(name):
                raise ConfigurationError(
                    f"OnChange table {name!r} is not a plain identifier (or schema.table)"
                )
        debounce = check_seconds(debounce, "OnChange(debounce)")
        limit = debounce * 10 if max_delay is None else check_seconds(max_delay, "max_delay")
        if limit < debounce:
            raise ConfigurationError(
                f"OnChange max_delay ({limit}) must not be shorter than debounce ({debounce})"
            )
        object.__setattr__(self, "tables", names)
        object.__setattr__(self, "debounce", debounce)
        object.__setattr__(self, "max_delay", max_delay)
        object.__setattr__(self, "poll", check_seconds(poll, "OnChange(poll)"))
        object.__setattr__(self, "_max", limit)

    def debouncer(self) -> Debouncer:
        """A fresh debouncer with this schedule's timings."""
        return Debouncer(self.debounce, self._max)


Schedule = Every | Cron | OnChange
"""What ``Aggregate(refresh=...)`` accepts (or ``None`` for refresh by hand only)."""


def check_schedule(refresh: object) -> Schedule | None:
    """Return ``refresh`` if it is a schedule or None, else raise ConfigurationError."""
    if refresh is None or isinstance(refresh, (Every, Cron, OnChange)):
        return refresh
    raise ConfigurationError(
        f"refresh must be Every(seconds), Cron('...'), OnChange(tables=[...]) or None, "
        f"got {refresh!r}"
    )


class Debouncer:
    """Coalesces a burst of change notices into one due time (trailing edge, capped).

    The first change of a burst opens it; each change pushes the due time to
    ``last change + debounce``, but never past ``first change + max_delay``.
    """

    def __init__(self, debounce: float, max_delay: float) -> None:
        self.debounce = debounce
        self.max_delay = max_delay
        self._first: float | None = None
        self._last = 0.0

    @property
    def pending(self) -> bool:
        """Whether changes have been seen that no refresh has covered yet."""
        return self._first is not None

    def note_change(self, now: float) -> None:
        """Record that a source table changed at ``now``."""
        if self._first is None:
            self._first = now
        self._last = now

    def due_at(self) -> float | None:
        """When the refresh for the pending burst is due (None when nothing is pending)."""
        if self._first is None:
            return None
        return min(self._last + self.debounce, self._first + self.max_delay)

    def take(self, now: float) -> bool:
        """Return True (and close the burst) if a refresh is due at ``now``."""
        due = self.due_at()
        if due is None or now < due:
            return False
        self._first = None
        return True

    def reopen(self, now: float) -> None:
        """A refresh for the burst failed: keep the changes pending from ``now``."""
        self.note_change(now)


class Backoff:
    """Exponential backoff with full jitter for retrying failed refreshes."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 60.0,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = check_seconds(initial, "initial backoff")
        self.maximum = check_seconds(maximum, "maximum backoff")
        self.factor = factor
        self._rng = rng
        self.failures = 0

    def failed(self) -> float:
        """Record one more failure; return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = backoff(self.initial, self.maximum, self.factor, self.failures)
        # Jitter in [ceiling/2, ceiling]: processes retrying together spread out, and
        # the wait still grows with each failure.
        return ceiling * (0.5 + 0.5 * self._rng())

    def succeeded(self) -> None:
        """Reset after a successful attempt."""
        self.failures = 0
