"""One ``AsyncRedisStore`` per event loop for the Django backend's native ``a*`` methods.

A ``redis.asyncio`` connection belongs to the event loop that opened it, while a Django
cache backend object lives for the whole process and may be awaited from several loops
(``asyncio.run`` per test, an ASGI server's loop, a thread's own loop). So the backend
asks for "the store of the running loop": opened on first use in that loop, shared by
every backend with the same LOCATION and OPTIONS, and closed, inside that loop, when the
loop shuts down its async generators (``asyncio.run`` and ASGI servers do) by a small
async generator parked in the loop for that purpose.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any

from cachewise.contrib.django._location import StoreSpec

_Opener = Callable[[StoreSpec], Any]


class LoopStores:
    """The async stores of one process: one per (event loop, StoreSpec)."""

    def __init__(self, opener: _Opener) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[StoreSpec, tuple[Any, AsyncGenerator[None, None]]]
        ] = weakref.WeakKeyDictionary()

    async def store(self, spec: StoreSpec) -> Any:
        """The running loop's store for ``spec``, opened on first use."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._loops.setdefault(loop, {}).get(spec)
            # A closed store (its loop shut its async generators down) is not reused.
            if found is not None and not getattr(found[0], "_closed", False):
                return found[0]
            store = self._opener(spec)
            keeper = _close_at_shutdown(store)
            self._loops[loop][spec] = (store, keeper)
        # The first step registers the generator with the loop (its asyncgen hooks), which
        # closes it, and so the store, in shutdown_asyncgens().
        await keeper.__anext__()
        return store


async def _close_at_shutdown(store: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await store.close()
