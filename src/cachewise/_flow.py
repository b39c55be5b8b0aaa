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
    try:
        fn, args = next(flow)
        while True:
            try:
                result = fn(*args)
            except BaseException as exc:  # the flow decides (cleanup, translation)
                fn, args = flow.throw(exc)
            else:
                fn, args = flow.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def arun(flow: Flow[T]) -> T:
    """Drive ``flow`` on the event loop: a call's awaitable result is awaited."""
    try:
        fn, args = next(flow)
        while True:
            try:
                result = fn(*args)
                if isawaitable(result):
                    result = await result
            except BaseException as exc:  # CancelledError too: the flow cleans up
                fn, args = flow.throw(exc)
            else:
                fn, args = flow.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
