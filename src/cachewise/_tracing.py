"""Optional OpenTelemetry spans around loads, flushes and refreshes.

Off by default: ``tracer`` stays ``None`` until ``cachewise.metrics.instrument`` is given
a tracer provider, and each call site pays one module-attribute check, on paths that
then do I/O (never on the hit path).
"""

from __future__ import annotations

from typing import Any

tracer: Any = None
"""An OpenTelemetry ``Tracer`` while spans are on; ``None`` (no spans) otherwise."""


def start(name: str, attributes: dict[str, Any]) -> Any:
    """A span for work a flow does between its yields (``end`` it); ``None`` when off.

    Not made current: a flow's steps may run on another task or thread than its start.
    """
    current = tracer
    return None if current is None else current.start_span(name, attributes=attributes)


def end(span: Any, error: BaseException | None = None) -> None:
    """End a span from :func:`start`, recording ``error`` on it if the work failed."""
    if span is None:
        return
    if error is not None:
        span.record_exception(error)
        span.set_status(_error_status(error))
    span.end()


def _error_status(error: BaseException) -> Any:
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - only with spans on

    return Status(StatusCode.ERROR, type(error).__name__)
