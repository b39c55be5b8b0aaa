"""Settings of the example site: PostgreSQL three ways, and cachewise as Django's cache.

Environment: ``DATABASE_URL`` (a PostgreSQL URL), ``DB_MODE`` (``persistent``: Django's
persistent connection per thread, ``CONN_MAX_AGE``; ``pool``: Django 5.1+'s native
psycopg pool; ``pgbouncer``: through PgBouncer in transaction mode, given by
``PGBOUNCER_URL``), and ``REDIS_URL`` (the cache; ``memory://`` without it).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from sqlalchemy.engine import make_url

SECRET_KEY = os.environ.get("SECRET_KEY", "example-only-" + uuid.uuid4().hex)
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
MIDDLEWARE: list[str] = []
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

MODE = os.environ.get("DB_MODE", "persistent")
_given = os.environ.get("PGBOUNCER_URL" if MODE == "pgbouncer" else "DATABASE_URL")
_url = make_url(_given or "postgresql://root@127.0.0.1:5432/test")
_options: dict[str, Any] = {}
if MODE == "pool":
    _options["pool"] = {"min_size": 1, "max_size": 4}  # psycopg_pool inside Django
if MODE == "pgbouncer":
    _options["prepare_threshold"] = None  # transaction mode: no server-side prepares
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.database,
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.host or "",
        "PORT": str(_url.port or ""),
        "CONN_MAX_AGE": None if MODE == "persistent" else 0,
        "DISABLE_SERVER_SIDE_CURSORS": MODE == "pgbouncer",
        "OPTIONS": _options,
        # A database of its own per run: the server may be shared.
        "TEST": {"NAME": os.environ.get("TEST_DB_NAME") or f"test_cw_site_{uuid.uuid4().hex[:10]}"},
    }
}

_redis = os.environ.get("REDIS_URL")
_namespace = f"cw-site-{uuid.uuid4().hex[:10]}"
CACHES = {
    "default": {
        "BACKEND": "cachewise.contrib.django.CacheBackend",
        "LOCATION": _redis or "memory://site",
        "OPTIONS": {"tiered": True, "namespace": _namespace} if _redis else {},
    }
}
SHOP_REDIS_URL = _redis
SHOP_NAMESPACE = _namespace
