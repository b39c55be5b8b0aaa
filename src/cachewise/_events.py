"""The logger tree and its events: every record cachewise logs names its event and fields.

Loggers: ``cachewise`` (the cache manager), ``cachewise.writeback``,
``cachewise.journal``, ``cachewise.redis``, ``cachewise.invalidation``,
``cachewise.pool``, ``cachewise.aggregates`` and ``cachewise.metrics``; docs/logging.md
lists every event with its level and fields. Fields travel as ``extra=`` attributes of
the record (``record.event``, ``record.cache``, ...), so JSON handlers and structlog
get them as data; the message says the same in words.
"""

from __future__ import annotations

import logging
from typing import Any

LOGGERS = (
    "cachewise",
    "cachewise.writeback",
    "cachewise.journal",
    "cachewise.redis",
    "cachewise.invalidation",
    "cachewise.pool",
    "cachewise.aggregates",
    "cachewise.metrics",
)
"""Every logger cachewise logs to (the tree under ``cachewise``)."""


def event(
    logger: logging.Logger,
    level: int,
    name: str,
    message: str,
    *args: object,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """Log ``message % args`` as event ``name`` with ``fields`` as record attributes."""
    if logger.isEnabledFor(level):
        logger.log(level, message, *args, exc_info=exc_info, extra={"event": name, **fields})
