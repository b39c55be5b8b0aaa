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
