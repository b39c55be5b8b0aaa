"""Test doubles we own: a real Source that can be switched off, and a counting one."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from cachewise import MappingSource
from cachewise._types import Key


class SourceDownError(Exception):
    """What a switched-off FlakySource raises (a stand-in for a database outage)."""


class FlakySource(MappingSource):
    """A MappingSource that can be taken down and brought back, and counts calls."""

    def __init__(self, data: dict[Key, Any] | None = None) -> None:
        super().__init__(data)
        self.down = False
        self.calls: dict[str, int] = {}
        self.gate: threading.Event | None = None
        """When set, load() waits on it: a slow read for race tests."""
        self.save_gate: threading.Event | None = None
        """When set, save() waits on it before applying: a slow write for race tests."""
        self._count_lock = threading.Lock()

    def _call(self, name: str) -> None:
        with self._count_lock:
            self.calls[name] = self.calls.get(name, 0) + 1
        if self.down:
            raise SourceDownError(f"source is down ({name})")

    def load(self, key: Key) -> Any:
        self._call("load")
        value = super().load(key)
        if self.gate is not None:
            self.gate.wait(10)
        return value

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        self._call("load_many")
        return super().load_many(keys)

    def save(self, key: Key, value: Any) -> None:
        self._call("save")
        if self.save_gate is not None:
            self.save_gate.wait(10)
        super().save(key, value)

    def save_many(self, items: Mapping[Key, Any]) -> None:
        self._call("save_many")
        super().save_many(items)

    def remove(self, key: Key) -> None:
        self._call("remove")
        super().remove(key)

    def remove_many(self, keys: Iterable[Key]) -> None:
        self._call("remove_many")
        super().remove_many(keys)
