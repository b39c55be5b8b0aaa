"""Test doubles we own (a real Source that can be switched off, a counting one) and waits."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

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


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``condition`` until true or a generous deadline (never an assertion on time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    """The captured records of one cachewise log event (``record.event == name``)."""
    return [r for r in caplog.records if getattr(r, "event", None) == name]
