"""The JSON report's schema (stable: other tools read it) and the document builder."""

from __future__ import annotations

from typing import Any

from cachewise.lab.metrics import EXTRA_FIELDS, RESULT_FIELDS
from cachewise.lab.runner import CaseResult

CASE_NAMES = (
    "banking",
    "stock-prices",
    "cms-shared",
    "cms-subsite",
    "ehr",
    "page-views",
    "pooling",
)

_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cachewise lab report",
    "type": "object",
    "required": ["cases"],
    "properties": {
        "cases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "data"],
                "properties": {
                    "name": {"enum": list(CASE_NAMES)},
                    "data": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["kind", "recommended", "workshop", "results"],
                            "properties": {
                                "kind": {"type": "string"},
                                "recommended": {"type": "string"},
                                "workshop": {"type": "string"},
                                "results": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["strategy", *RESULT_FIELDS],
                                        "properties": {
                                            "strategy": {"type": "string"},
                                            "hit_ratio": {
                                                "type": "number",
                                                "minimum": 0,
                                                "maximum": 1,
                                            },
                                            "source_reads": _COUNT,
                                            "source_writes": _COUNT,
                                            "read_p50_us": _NUMBER,
                                            "read_p99_us": _NUMBER,
                                            "write_p50_us": _NUMBER,
                                            "write_p99_us": _NUMBER,
                                            "stale_reads": _COUNT,
                                            "lost_writes": _COUNT,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}
"""Required: exactly the fields of issue 7; further fields (notes, extras) may be added."""

_INTEGER_FIELDS = {"source_reads", "source_writes", "stale_reads", "lost_writes", *EXTRA_FIELDS}


def _result(strategy: str, metrics: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": strategy}
    for name in (*RESULT_FIELDS, *EXTRA_FIELDS, "connections_opened"):
        if name in metrics:
            value = metrics[name]
            out[name] = (
                int(value)
                if name in _INTEGER_FIELDS or name.endswith("opened")
                else (round(float(value), 3))
            )
    return out


def document(cases: list[CaseResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON report for measured cases (``meta``: seed, mode, database, store)."""
    return {
        **meta,
        "cases": [
            {
                "name": case.name,
                "title": case.title,
                "params": case.params,
                "notes": case.notes,
                "seconds": round(case.seconds, 2),
                "data": [
                    {
                        "kind": kr.kind.name,
                        "recommended": kr.decision.winner,
                        "workshop": kr.kind.workshop,
                        "runner_up": kr.decision.runner_up,
                        "runner_up_cost": kr.cost,
                        "objective": kr.kind.objective.describe(),
                        "journal_lost_writes": kr.journal_lost,
                        "results": [_result(s, kr.results[s]) for s in kr.decision.ranking],
                    }
                    for kr in case.kinds
                ],
            }
            for case in cases
        ],
    }
