"""MappingSource: a dict (or any mutable mapping) as the authoritative data source."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from cachewise._types import MISSING, Key


class MappingSource:
    """A mutable mapping as the source of record, for tests, demos and small apps.

    Reads and writes go to the mapping you pass (it is not copied), under a lock so
    that ``save_many`` is applied as one step.
    """

    def __init__(self, data: MutableMapping[Any, Any] | None = None) -> None:
        self.data: MutableMapping[Any, Any] = {} if data is None else data
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MappingSource({len(self.data)} keys)"

    def load(self, key: Key) -> Any:
        return self.data.get(key, MISSING)

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        data = self.data
        with self._lock:
            return {k: data[k] for k in keys if k in data}

    def save(self, key: Key, value: Any) -> None:
        self.data[key] = value

    def save_many(self, items: Mapping[Key, Any]) -> None:
        with self._lock:
            self.data.update(items)

    def remove(self, key: Key) -> None:
        self.data.pop(key, None)

    def remove_many(self, keys: Iterable[Key]) -> None:
        with self._lock:
            for key in keys:
                self.data.pop(key, None)
