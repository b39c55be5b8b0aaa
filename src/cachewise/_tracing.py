"""Optional OpenTelemetry spans around loads, flushes and refreshes.

Off by default: ``tracer`` stays ``None`` until ``cachewise.metrics.instrument`` is given
a tracer provider, and each call site pays one module-attribute check, on paths that
then do I/O (never on the hit path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

tracer: Any = None
"""An OpenTelemetry ``Tracer`` while spans are on; ``None`` (no spans) otherwise."""


def traced(name: str, attributes: dict[str, Any], fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` inside a span named ``name``; an error is recorded on the span."""
    current = tracer
    if current is None:  # turned off since the caller looked
        return fn(*args)
    with current.start_as_current_span(name, attributes=attributes):
        return fn(*args)
