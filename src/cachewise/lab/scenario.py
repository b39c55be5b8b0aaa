"""The shape of a case: its data kinds, objective, parameters and scenario builder."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cachewise.errors import ConfigurationError
from cachewise.lab.objective import Objective
from cachewise.lab.workloads import Workload

Params = dict[str, Any]


@dataclass(frozen=True)
class TableSpec:
    """One table of a scenario: its strategy (``None``: the one under test) and admission.

    ``admit`` is the cache-aside application's own rule for what it puts in the cache.
    """

    strategy: str | None = None
    admit: Callable[[str], bool] | None = None
    derived: tuple[str, str] | None = None
    """``(table, key prefix)``: under plain cache-aside the application computes this
    value from that table's rows of the group named by the key after the prefix (a
    balance from the transactions) instead of storing it."""


@dataclass
class Scenario:
    """A built case: the workload, its tables and the cache they share."""

    workload: Workload
    tables: dict[str, TableSpec]
    cache_entries: int
    eviction: str = "lru"


@dataclass(frozen=True)
class Kind:
    """One kind of data of a case, with the workshop's answer and the case's objective."""

    name: str
    table: str
    """The table whose strategy is varied."""
    workshop: str
    objective: Objective
    candidates: tuple[str, ...]
    fixed: Mapping[str, str] = field(default_factory=dict)
    """Strategies of the case's other tables while this kind is measured."""


@dataclass(frozen=True)
class Case:
    """A workshop case study as an experiment."""

    name: str
    title: str
    story: str
    kinds: tuple[Kind, ...]
    defaults: Mapping[str, Any]
    quick: Mapping[str, Any]
    build: Callable[[Params, random.Random], Scenario]
    workshop_says: str = ""

    def params(self, quick: bool, overrides: Mapping[str, str]) -> Params:
        """Defaults, then ``--quick`` sizes, then the user's ``--param`` values (typed)."""
        out: Params = dict(self.defaults)
        if quick:
            out.update(self.quick)
        for key, text in overrides.items():
            if key not in self.defaults:
                raise ConfigurationError(
                    f"case {self.name!r} has no parameter {key!r}; "
                    f"it has: {', '.join(sorted(self.defaults))}"
                )
            out[key] = coerce(text, self.defaults[key], f"{self.name}.{key}")
        return out


def coerce(text: str, like: Any, name: str) -> Any:
    """Parse ``text`` as the type of the default ``like``."""
    if isinstance(like, bool):
        if text.lower() not in {"true", "false", "1", "0", "yes", "no"}:
            raise ConfigurationError(f"--param {name}={text!r}: expected true or false")
        return text.lower() in {"true", "1", "yes"}
    try:
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
    except ValueError:
        raise ConfigurationError(
            f"--param {name}={text!r}: expected {type(like).__name__}"
        ) from None
    return text
