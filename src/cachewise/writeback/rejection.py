"""Rows the source refuses: tell them from outages, and isolate them in a failed batch.

Shared by both write-back runtimes. A batch the source refuses for a row in it (a
constraint, a value its column cannot hold: ``RejectedError``, or the source's own
checks: ``InvalidValueError``, ``InvalidKeyError``) is split in halves and each half
written again, until every refused row stands alone: about 2·log2(batch) statements
per refused row, and every other row is written. Any other error (the database is
unreachable) propagates, and the batch stays dirty as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from cachewise._events import event
from cachewise._flow import Flow, run
from cachewise._types import Key
from cachewise.errors import FlushError, InvalidKeyError, InvalidValueError, RejectedError

logger = logging.getLogger("cachewise.writeback")

ROW_LEVEL: Final = (RejectedError, InvalidValueError, InvalidKeyError)
"""What a source raises for rows it refuses for what they hold: retrying cannot help."""


def isolate_flow(
    write: Callable[[Mapping[Key, Any]], Any],
    items: dict[Key, Any],
    on_split: Callable[[], None] | None = None,
) -> Flow[dict[Key, str]]:
    """``write(items)``; if the source refuses rows, bisect to them; return them, with why.

    A flow (``_flow``): each write is yielded, so a sync or an async source serves.
    ``on_split`` is called each time a refused batch is about to be split (a crash-test
    point: earlier halves may be committed already).
    """
    try:
        yield write, (items,)
    except ROW_LEVEL as exc:
        if len(items) == 1:
            return {key: str(exc) for key in items}
        if on_split is not None:
            on_split()
        keys = list(items)
        middle = len(keys) // 2
        refused = yield from isolate_flow(write, {k: items[k] for k in keys[:middle]}, on_split)
        refused.update(
            (yield from isolate_flow(write, {k: items[k] for k in keys[middle:]}, on_split))
        )
        return refused
    return {}


def isolate(
    write: Callable[[Mapping[Key, Any]], Any],
    items: dict[Key, Any],
    on_split: Callable[[], None] | None = None,
) -> dict[Key, str]:
    """:func:`isolate_flow`, run in place (a sync source)."""
    return run(isolate_flow(write, items, on_split))


def log_parked(parked: Iterable[tuple[Key, str]], name: str = "cachewise") -> None:
    """One line per parked key (a key is parked once), naming it and the source's reason."""
    for key, reason in parked:
        event(
            logger,
            logging.ERROR,
            "row_refused",
            "write-back %s: the source refused the write of key %r (%s); it is parked, not "
            "retried: see Cache.rejected(), retry_rejected(), discard_rejected()",
            name,
            key,
            reason,
            cache=name,
            key=repr(key),
            reason=reason,
        )


def refused_error(refused: Mapping[Key, str], written: int) -> FlushError:
    """The FlushError ``flush()`` raises when the source refused rows (named, with why)."""
    names = ", ".join(repr(k) for k in list(refused)[:10])
    more = f" and {len(refused) - 10} more" if len(refused) > 10 else ""
    first, reason = next(iter(refused.items()))
    return FlushError(
        f"the source refused the writes of {len(refused)} keys ({names}{more}); they are "
        f"parked (Cache.rejected()), {written} others were written. Key {first!r}: {reason}",
        dict(refused),
    )
