"""examples/django_site: its own Django tests, run in a process of their own per database mode.

Django's settings are global to a process, so the site runs as ``manage.py test``: on
PostgreSQL with Django's persistent connections (``CONN_MAX_AGE``), with Django 5.1+'s
native psycopg pool, and through PgBouncer in transaction mode; the cache in Redis
(tiered) through ``cachewise.contrib.django.CacheBackend``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from cachewise.pool import direct_url

pytest.importorskip("django")

SITE = Path(__file__).resolve().parents[2] / "examples" / "django_site"


def _plain(url: str) -> str:
    return url.split("?", 1)[0].replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["persistent", "pool", "pgbouncer"])
def test_example_site_passes_its_tests(
    mode: str, postgres_url: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    database = direct_url(postgres_url).render_as_string(hide_password=False)
    env = {
        **os.environ,
        "DATABASE_URL": _plain(database),
        "REDIS_URL": redis_url,
        "DB_MODE": mode,
        "PYTHONPATH": os.pathsep.join([str(SITE), str(SITE.parents[1] / "src")]),
    }
    argv = [sys.executable, "manage.py", "test", "shop", "-v", "1"]
    test_db = f"test_cw_site_{uuid.uuid4().hex[:10]}"
    if mode == "pgbouncer":
        env["PGBOUNCER_URL"] = _plain(request.getfixturevalue("pgbouncer_url"))
        # PgBouncer keeps server connections to the test database, so Django cannot drop
        # it through PgBouncer: keep it, and drop it here on PostgreSQL itself.
        env["TEST_DB_NAME"] = test_db
        argv.append("--keepdb")
    try:
        done = subprocess.run(
            argv, check=False, cwd=SITE, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        if mode == "pgbouncer":
            admin = sa.create_engine(database, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{test_db}" WITH (FORCE)')
            admin.dispose()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stderr
