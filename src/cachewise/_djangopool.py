"""Django's implicit pooling for the lab and the pooling benchmark: a connection per thread.

Django keeps one database connection per thread and reuses it across requests when
``CONN_MAX_AGE`` allows (``None``: for ever); ``close_old_connections()`` runs at the
start and end of every request (Django's request signals) and closes only connections
that are too old or broken. This drives Django's own connection handling, configured
for one PostgreSQL database under the alias ``cachewise_bench``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

ALIAS = "cachewise_bench"


@dataclass
class DjangoRequests:
    """One SELECT per request through Django's connection for the calling thread."""

    query: Callable[[str, tuple[Any, ...]], Any]
    """Run SQL (``%s`` parameters) as one request: the request signals around a cursor."""
    close_thread: Callable[[], None]
    """Close the calling thread's connection (at the end of a worker thread)."""


def _database(url: URL, conn_max_age: float | None) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.database or "postgres",
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        "HOST": url.host or "",
        "PORT": str(url.port or ""),
        "CONN_MAX_AGE": conn_max_age,
        "CONN_HEALTH_CHECKS": False,
    }


def django_requests(url: URL, *, conn_max_age: float | None = None) -> DjangoRequests:
    """Django set up (if it is not) with ``url`` as the alias ``cachewise_bench``.

    ImportError when Django is not installed.
    """
    django = importlib.import_module("django")
    conf = importlib.import_module("django.conf")
    db = importlib.import_module("django.db")
    settings = conf.settings
    if not settings.configured:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.dummy"}},
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    connections = db.connections
    wanted = _database(url, conn_max_age)
    both = {"default": connections.settings["default"], ALIAS: wanted}
    connections.settings[ALIAS] = connections.configure_settings(both)[ALIAS]

    def query(sql: str, params: tuple[Any, ...]) -> Any:
        connection = connections[ALIAS]
        connection.close_if_unusable_or_obsolete()  # request_started
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        connection.close_if_unusable_or_obsolete()  # request_finished
        return row

    def close_thread() -> None:
        connections[ALIAS].close()

    return DjangoRequests(query, close_thread)
