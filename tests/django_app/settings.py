"""Django settings for our tests (configured once per process, on first use)."""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any

import django
from django.conf import settings
from django.db import connection, connections, models

_DB = os.path.join(tempfile.gettempdir(), f"cw-django-{os.getpid()}.sqlite3")


def configure() -> None:
    """Configure and set up Django once: SQLite default database, our test app."""
    if settings.configured:
        return
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB}},
        SECRET_KEY="cachewise-tests-" + uuid.uuid4().hex,
        INSTALLED_APPS=["django.contrib.contenttypes", "tests.django_app"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}},
    )
    django.setup()


def add_database(alias: str, sqlalchemy_url: str) -> None:
    """Make ``alias`` a PostgreSQL or MariaDB database for Django from a SQLAlchemy URL.

    MariaDB goes through PyMySQL standing in for mysqlclient (``install_as_MySQLdb``),
    the driver the rest of the test suite uses.
    """
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url)
    if alias in connections.settings:
        return
    engine = "django.db.backends.postgresql"
    if url.get_backend_name() in {"mysql", "mariadb"}:
        import pymysql  # type: ignore[import-untyped]  # ships no type information

        pymysql.install_as_MySQLdb()
        engine = "django.db.backends.mysql"
    conf: dict[str, Any] = {
        "ENGINE": engine,
        "NAME": url.database,
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        "HOST": url.host or "",
        "PORT": str(url.port or ""),
    }
    both = {"default": connections.settings["default"], alias: conf}
    connections.settings[alias] = connections.configure_settings(both)[alias]


def make_model(table: str, *, using: str = "default") -> type[models.Model]:
    """A Product model on its own table (created now; drop it with ``drop_model``)."""
    attrs: dict[str, Any] = {
        "__module__": "tests.django_app.models",
        "sku": models.CharField(max_length=40, unique=True),
        "name": models.CharField(max_length=100),
        "price": models.DecimalField(max_digits=10, decimal_places=2),
        "views": models.IntegerField(default=0),
        "Meta": type("Meta", (), {"db_table": table, "app_label": "django_app"}),
    }
    model: type[models.Model] = type(f"Product_{table}", (models.Model,), attrs)
    with connections[using].schema_editor() as editor:
        editor.create_model(model)
    return model


def drop_model(model: type[models.Model], *, using: str = "default") -> None:
    with connections[using].schema_editor() as editor:
        editor.delete_model(model)
    connections[using].close()


__all__ = ["add_database", "configure", "connection", "drop_model", "make_model"]
