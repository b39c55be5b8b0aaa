"""Run Django's own cache test suite against ``cachewise.contrib.django.CacheBackend``.

Django's source distribution ships ``tests/cache/tests.py``: ``BaseCacheTests`` (what
every cache backend must do) and the cache middleware / ``django.utils.cache`` test
classes. This runner fetches that sdist with pip (the version of the installed Django;
nothing of Django's is kept in this repository), points those classes at our backend
for one LOCATION kind, and runs them with Django's test runner::

    python -m tests.django_cache_suite memory
    python -m tests.django_cache_suite redis      # REDIS_URL or the local Redis
    python -m tests.django_cache_suite tiered     # redis:// with OPTIONS tiered=True
    python -m tests.django_cache_suite memcached  # MEMCACHED_URL, or a memcached it starts

The only adjustment is the one Django's own ``RedisCacheTests`` and memcached test
classes make: the ``cull``/``zero_cull`` caches are left out (cachewise evicts one
entry at a time by policy; it does not cull a third of the cache at once), so
``test_cull``, ``test_zero_cull`` and ``test_cull_delete_when_store_empty`` skip as
"Culling isn't implemented". Exit status 0 only if nothing failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
import uuid
from pathlib import Path
from typing import Any

BACKEND = "cachewise.contrib.django.CacheBackend"
KINDS = ("memory", "redis", "tiered", "memcached")
EXCLUDED = {"cull", "zero_cull"}  # as Django's RedisCacheTests / BaseMemcachedTests
MIDDLEWARE_CLASSES = (
    "CacheUtils",
    "PrefixedCacheUtils",
    "CacheHEADTest",
    "CacheI18nTest",
    "PrefixedCacheI18nTest",
    "CacheMiddlewareTest",
    "TestWithTemplateResponse",
)
CACHE_DIR = Path(os.environ.get("CACHEWISE_DJANGO_SDIST", Path.home() / ".cache" / "cachewise"))


def django_tests_dir(version: str) -> Path:
    """Django's ``tests`` directory from its sdist (downloaded with pip on first use)."""
    root = CACHE_DIR / f"django-{version}"
    tests = root / "tests"
    if (tests / "cache" / "tests.py").exists():
        return tests
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
             "--no-deps", f"django=={version}", "-d", download],
            check=True, timeout=600,
        )  # fmt: skip
        (archive,) = Path(download).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            prefix = f"{tar.getnames()[0].split('/')[0]}/tests/"
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith((prefix + "cache/", prefix + "urls"))
            ]
            root.mkdir(parents=True, exist_ok=True)
            for member in members:
                member.name = member.name[len(prefix) :]
            tar.extractall(tests, members=members, filter="data")
    return tests


def location(kind: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """CACHES params for ``kind``: the main cache, and a separate "other" one."""
    if kind == "memory":
        return (
            {"BACKEND": BACKEND, "LOCATION": f"memory://{namespace}"},
            {"BACKEND": BACKEND, "LOCATION": f"memory://{namespace}-other"},
        )
    if kind == "memcached":
        url = os.environ["MEMCACHED_URL"]
    else:
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    options: dict[str, Any] = {"namespace": namespace, "tiered": kind == "tiered"}
    return (
        {"BACKEND": BACKEND, "LOCATION": url, "OPTIONS": options},
        {
            "BACKEND": BACKEND,
            "LOCATION": url,
            "OPTIONS": {**options, "namespace": namespace + "-o"},
        },
    )


def configure(tests_dir: Path) -> None:
    """Django settings as Django's runtests.py sets them for the cache tests."""
    import django
    from django.conf import settings

    sys.path.append(str(tests_dir))
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3"}},
        SECRET_KEY="cachewise-django-cache-suite",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "django.contrib.messages",
            "cache",
        ],
        MIDDLEWARE=[],
        ROOT_URLCONF="urls",
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        LANGUAGE_CODE="en",
        USE_TZ=False,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        MIGRATION_MODULES={"auth": None, "contenttypes": None, "sessions": None},
    )
    django.setup()


def suite(kind: str, namespace: str) -> unittest.TestSuite:
    """Django's cache test classes, each pointed at our backend for ``kind``."""
    from cache import tests as dj  # type: ignore[import-not-found]  # Django's, fetched
    from django.test import TestCase, override_settings

    main, other = location(kind, namespace)
    classes: list[type] = []

    @override_settings(CACHES=dj.caches_setting_for_tests(base=main, exclude=EXCLUDED))
    class CachewiseCacheTests(dj.BaseCacheTests, TestCase):  # type: ignore[misc]
        """BaseCacheTests, as is."""

    classes.append(CachewiseCacheTests)
    for name in MIDDLEWARE_CLASSES:
        base = getattr(dj, name)
        caches = {}
        for alias, params in base._overridden_settings["CACHES"].items():
            ours = dict(other if params.get("LOCATION") == "other" else main)
            ours.update({k: v for k, v in params.items() if k not in ("BACKEND", "LOCATION")})
            caches[alias] = ours
        classes.append(override_settings(CACHES=caches)(type(f"Cachewise{name}", (base,), {})))
    loader = unittest.TestLoader()
    return unittest.TestSuite(loader.loadTestsFromTestCase(c) for c in classes)


def run(kind: str) -> int:
    """Run the suite for ``kind``; print one summary line; return the exit status."""
    import django

    tests_dir = django_tests_dir(django.get_version())
    configure(tests_dir)
    from django.test.runner import DiscoverRunner

    namespace = f"cw-djsuite-{uuid.uuid4().hex[:10]}"
    runner = DiscoverRunner(verbosity=1, interactive=False)
    runner.setup_test_environment()
    old = runner.setup_databases()
    try:
        result = runner.run_suite(suite(kind, namespace))
    finally:
        runner.teardown_databases(old)
        runner.teardown_test_environment()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    where = location(kind, namespace)[0]["LOCATION"].split("://")[0] + "://"
    tiered = " (tiered)" if kind == "tiered" else ""
    print(f"Django {django.get_version()} cache suite on {where}{tiered}: ", end="")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    args = parser.parse_args()
    if args.kind == "memcached" and not os.environ.get("MEMCACHED_URL"):
        from tests.servers import MemcachedServer

        server = MemcachedServer()
        server.start()
        os.environ["MEMCACHED_URL"] = server.url
        try:
            return run(args.kind)
        finally:
            server.close()
    return run(args.kind)


if __name__ == "__main__":
    sys.exit(main())
