"""Types of the optional C accelerator (``_speedups.c``); absent when it is not built."""

from collections.abc import Callable, Hashable
from typing import Any

class HitReader:
    """``reader(key, default=None, *, loader=None)``: a live hit in C, else ``slow``."""

    def __init__(
        self,
        data: dict[Any, tuple[Any, float | None]],
        clock: Callable[[], float],
        touch: Callable[[Any], object],
        slow: Callable[[Any, Any, Any], Any],
    ) -> None: ...
    def __call__(self, key: Hashable, default: Any = None, *, loader: Any = None) -> Any: ...
    @property
    def hits(self) -> int:
        """Live hits served (exact: counted under the GIL)."""
    @property
    def direct_clock(self) -> bool:
        """Whether the clock is ``time.monotonic`` read directly (no Python call)."""

class Flight:
    """One in-flight load of a key (the C twin of ``cache._Load``)."""

    value: Any
    error: BaseException | None
    superseded: bool
    def __init__(self, missing: Any = None) -> None: ...
    def wait(self) -> Any:
        """Block until the leader publishes; return its value or raise its error."""
    def publish(self) -> None:
        """Release the waiters (the outcome is in ``value`` / ``error``)."""

class Inserter:
    """``inserter(key, entry)``: a MemoryStore's insert under its lock, in C."""

    def __init__(
        self,
        data: dict[Any, tuple[Any, float | None]],
        lock: Any,
        on_insert: Callable[[Any], object],
        on_hit: Callable[[Any], object],
        evict: Callable[[], Hashable],
        max_entries: int,
        listeners: list[Callable[[list[Any]], object]],
    ) -> None: ...
    def __call__(self, key: Any, entry: tuple[Any, float | None]) -> None: ...
    @property
    def evictions(self) -> int:
        """Entries evicted by this inserter."""

class MissPath:
    """``path(key, default, loader)``: ``Cache.read`` past its hit, for a MemoryStore."""

    def __init__(
        self,
        data: dict[Any, tuple[Any, float | None]],
        inserter: Inserter | Callable[[Any, tuple[Any, float | None]], None],
        inflight: dict[Any, Any],
        stripes: list[Any],
        source_load: Callable[[Any], Any] | None,
        clock: Callable[[], float],
        ttl: float | None,
        slow: Callable[[Any, Any, Any], Any],
        missing: Any,
    ) -> None: ...
    def __call__(self, key: Any, default: Any, loader: Any) -> Any: ...
    observed: bool
    """True: loads are timed; a miss with a per-call loader goes to the Python path."""
    source_load: Callable[[Any], Any] | None
    """Read-through's loader (None: cache-aside); metrics swap in a timed one."""
    @property
    def misses(self) -> int:
        """Misses counted here (exact)."""
    @property
    def loads(self) -> int:
        """Loads this path led (exact)."""
