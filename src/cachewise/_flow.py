"""Sans-I/O flows: logic written once as generators that yield calls, run by two drivers.

A flow is a generator that yields ``(function, args)`` for every step that may do I/O
(a store, source, journal or lock call) and receives the result, or has the call's
exception thrown into it. :func:`run` calls each function in place (the sync
``Cache``); :func:`arun` also awaits what the call returns when it is awaitable (the
``AsyncCache``, whose stores and sources are coroutines, while a ``MemoryStore`` or a
plain loader stays a plain call). This is the shape of httpx's ``auth_flow`` and
psycopg's ``generators.py``: the strategy decides, the driver does the I/O, so the
two drivers cannot drift apart on what the strategies mean.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from inspect import isawaitable
from typing import Any, TypeVar

T = TypeVar("T")

Call = tuple[Callable[..., Any], tuple[Any, ...]]
"""One step of a flow: a function and its positional arguments."""

Flow = Generator[Call, Any, T]
"""A generator of calls that returns a ``T``."""


def run(flow: Flow[T]) -> T:
    """Drive ``flow`` synchronously: each call is made in place."""
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            # A call's exception is thrown in outside our ``except``: what the flow raises
            # then is not chained to it implicitly (a cause may name a secret).
            if error is None:
                fn, args = flow.send(result)
            else:
                fn, args = flow.throw(error)
                error = None
            try:
                result = fn(*args)
            except BaseException as exc:  # the flow decides (cleanup, translation)
                error = exc
    except StopIteration as stop:
        value: T = stop.value
        return value


async def arun(flow: Flow[T]) -> T:
    """Drive ``flow`` on the event loop: a call's awaitable result is awaited."""
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            if error is None:
                fn, args = flow.send(result)
            else:
                fn, args = flow.throw(error)
                error = None
            try:
                result = fn(*args)
                if isawaitable(result):
                    result = await result
            except BaseException as exc:  # CancelledError too: the flow cleans up
                error = exc
    except StopIteration as stop:
        value: T = stop.value
        return value
