"""Passwords never show: a table of hostile URLs through every path that prints a URL.

Each URL carries a password with ``#``, ``@``, ``/``, ``?``, ``%`` or non-ASCII text (and
some a hostile user name), as typed and percent-encoded, for Redis, PostgreSQL, MariaDB
and SQLite. Every path is driven for real (against a closed port, or the real server):
repr and str, exceptions and their whole cause chains, log records with their
tracebacks, and every CLI command in text and ``--json``.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from cachewise import Cache, MemoryStore, RedisStore, SQLSource, connect
from cachewise._pgbouncer import free_port
from cachewise._redact import parses, redact, splits_at_first_at
from cachewise.aggregates import Aggregate
from cachewise.cli import main
from cachewise.errors import CachewiseError, ConfigurationError
from cachewise.invalidation import RedisBus
from tests.conftest import IN_CI
from tests.servers import RedisServer

PASSWORDS = [
    "pa#Hunter2xyz",
    "p@ssWord9/Kilo",
    "Hun/ter2Xyz",
    "Lima?Mike=Nove",
    "Oscar%40Papa%zzQ",
    "pässwörd€Quebec",
    "Alpha@Bravo#Charlie/Delta?Echo",
]
USERS = ["root", "us#er@Zulu"]
CLOSED = free_port()  # nothing listens here: every connection is refused


def _forms(password: str) -> list[str]:
    return [password, quote(password, safe="")]


def _url(scheme: str, user: str, password: str, port: int = CLOSED) -> str:
    if scheme.startswith("redis"):
        return f"{scheme}://{user}:{password}@127.0.0.1:{port}/0"
    if scheme == "sqlite":
        return f"sqlite://{user}:{password}@/nowhere.db"
    return f"{scheme}://{user}:{password}@127.0.0.1:{port}/test"


def _table(schemes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(url, password) pairs: every scheme x password x user x typed/encoded."""
    return [
        (_url(scheme, user, form), password)
        for scheme in schemes
        for password in PASSWORDS
        for form in _forms(password)
        for user in USERS
    ]


REDIS = ("redis", "rediss")
SQL = ("postgresql+psycopg", "mysql", "mysql+pymysql", "sqlite")


def _pieces(password: str) -> set[str]:
    """The password, its encodings, and every piece of it a URL parser could split off."""
    forms = {password, unquote(password), quote(password, safe="")}
    pieces = {p for form in forms for p in re.split(r"[@/?#:&=%]", form) if len(p) >= 4}
    return forms | pieces


def assert_hidden(text: str, password: str) -> None:
    shown = sorted(piece for piece in _pieces(password) if piece in text)
    assert not shown, f"secret {shown} in: {text}"


def _chain(exc: BaseException) -> str:
    """Everything an exception shows: the formatted chain plus each link's args.

    The chain is Python's: ``__cause__``, else ``__context__`` unless ``from None``
    suppressed it (what tracebacks, logging and error trackers show).
    """
    parts = ["".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        parts.append(f"{link!s} {link.args!r}")
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return "\n".join(parts)


def _raises(fn: Callable[[], object]) -> str:
    """Run ``fn``; it must raise one of ours; return everything the error shows."""
    with pytest.raises(CachewiseError) as info:
        fn()
    return _chain(info.value)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def _ids(table: list[tuple[str, str]]) -> list[str]:
    return [f"{i}-{url.split(':', 1)[0]}" for i, (url, _) in enumerate(table)]


ALL = _table(REDIS + SQL)


@pytest.mark.parametrize(("url", "password"), ALL, ids=_ids(ALL))
def test_redact_hides_the_password_and_keeps_the_rest(url: str, password: str) -> None:
    shown = redact(url)
    assert_hidden(shown, password)
    assert shown.startswith(url.split("://", maxsplit=1)[0] + "://")
    assert shown.endswith(url.rpartition("@")[2])  # host, port and database stay


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app:Sup3rS3cret@localhost/shop", "***@localhost/shop"),
        ("redis://:p@ss@h:1/0", "redis://:***@h:1/0"),
        ("postgresql://u:pa#Hunter2@h/db", "postgresql://***@h/db"),
        ("postgresql://u:pw@h/db?sslmode=require&password=x#y", "postgresql://u:***@h/db?"
         "sslmode=require&password=***"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
        ("redis://user@h:6379", "redis://user@h:6379"),
    ],
)  # fmt: skip
def test_redact_parses_or_hides_everything_before_the_last_at(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "urlsplit_reads_it", "sqlalchemy_reads_it"),
    [
        ("redis://:p@ss@h/0", True, False),  # urlsplit splits at the last "@"
        ("postgresql://u:pa#ss@h/db", False, True),  # SQLAlchemy's password runs to "@"
        ("postgresql://u:p@ss/x@h/db", False, False),
        ("postgresql://u:p%40ss@h/db", True, True),
        ("sqlite:///dir/a@b.db", False, True),
        ("sqlite:///plain.db", True, True),
    ],
)
def test_which_parser_reads_a_url_as_written(
    text: str, urlsplit_reads_it: bool, sqlalchemy_reads_it: bool
) -> None:
    assert parses(text) is urlsplit_reads_it
    assert splits_at_first_at(text) is sqlalchemy_reads_it


REDIS_TABLE = _table(REDIS)


@pytest.mark.parametrize(("url", "password"), REDIS_TABLE, ids=_ids(REDIS_TABLE))
def test_redis_paths_never_show_the_password(
    url: str, password: str, logs: pytest.LogCaptureFixture
) -> None:
    if not parses(url):  # refused: redis-py would misread it
        with pytest.raises(ConfigurationError, match="percent-encode") as refused:
            RedisStore(url, namespace="cw-secrets")
        assert_hidden(_chain(refused.value), password)
        return
    store = RedisStore(url, namespace="cw-secrets", timeout=2.0)
    shown = [repr(store), str(store), repr(Cache(store)), str(Cache(store))]
    shown.append(_raises(lambda: store.get(1)))
    shown.append(_raises(lambda: Cache(store).read(1)))
    open_store = RedisStore(url, namespace="cw-secrets", timeout=2.0, fail_open=True)
    assert open_store.get(1) is not None  # a miss, logged
    shown.append(_raises(lambda: RedisBus(url, ready_timeout=1.0)))
    shown.append(logs.text)
    for text in shown:
        assert_hidden(text, password)
    assert "127.0.0.1" in shown[0]
    assert any("fail_open" in r.getMessage() for r in logs.records)  # the log was written


SQL_TABLE = _table(SQL)


@pytest.mark.parametrize(("url", "password"), SQL_TABLE, ids=_ids(SQL_TABLE))
def test_sql_paths_never_show_the_password(
    url: str, password: str, logs: pytest.LogCaptureFixture
) -> None:
    shown = [_raises(lambda: SQLSource(url, table="products"))]
    shown.append(_raises(lambda: Aggregate(url, "cw_secret_agg", "SELECT 1 AS k", "k")))
    try:
        engine = connect(url)
    except ConfigurationError as exc:
        shown.append(_chain(exc))
    else:
        shown.append(repr(engine))
        shown.append(_raises(lambda: engine.connect().close()))
        engine.dispose()
    shown.append(logs.text)
    for text in shown:
        assert_hidden(text, password)


CLI_TABLE = [
    (url, password)
    for url, password in _table(("postgresql+psycopg", "mysql", "redis"))
    if "us#er" not in url  # the user name changes nothing on these paths
]


@pytest.mark.parametrize(("url", "password"), CLI_TABLE, ids=_ids(CLI_TABLE))
def test_every_cli_command_hides_the_password(
    url: str, password: str, capsys: pytest.CaptureFixture[str], logs: pytest.LogCaptureFixture
) -> None:
    database = url if not url.startswith("redis") else _url("postgresql", "root", password)
    redis = url if url.startswith("redis") else _url("redis", "root", password)
    runs = [
        ["pool", database, "--threads", "1", "--requests", "1"],
        ["pool", database, "--threads", "1", "--requests", "1", "--json"],
        ["aggregate", "status", "cw_secret_agg", "--database", database],
        ["aggregate", "status", "cw_secret_agg", "--database", database, "--json"],
        ["aggregate", "refresh", "cw_x", "--database", database, "--query", "SELECT 1 AS k",
         "--key", "k", "--json"],
        ["lab", "--quick", "--case", "pooling", "--database", database],
        ["lab", "--quick", "--case", "stock-prices", "--redis", redis, "--json", "/dev/null"],
    ]  # fmt: skip
    for argv in runs:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code != 0, (argv, out, err)  # nothing listens: every run fails
        assert_hidden(out + err, password)
        assert "Traceback" not in err
    assert_hidden(logs.text, password)


PG_TABLE = [(url, pw) for url, pw in _table(("postgresql+psycopg",)) if "us#er" not in url]


@pytest.mark.parametrize(("form", "password"), PG_TABLE, ids=_ids(PG_TABLE))
def test_a_working_postgresql_url_with_a_hostile_password_shows_none_of_it(
    form: str,
    password: str,
    postgres_url: str,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Trust auth accepts any password: these connect, so the success paths print URLs.
    real = postgres_url.split("@", 1)[1]
    url = form.replace(f"127.0.0.1:{CLOSED}/test", real)
    if not splits_at_first_at(url):  # an unencoded "@": SQLAlchemy would misread it
        with pytest.raises(ConfigurationError, match="percent-encode") as refused:
            connect(url)
        assert_hidden(_chain(refused.value), password)
        return
    engine = connect(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {unique_name} (id integer PRIMARY KEY, name text)")
    try:
        source = SQLSource(url, table=unique_name)
        shown = [repr(source), repr(Cache(MemoryStore(), source)), repr(engine)]
        source.close()
        code = main(["pool", url, "--threads", "1", "--requests", "2", "--json"])
        out = capsys.readouterr().out
        assert code == 0, out
        shown.append(out)
        assert json.loads(out)["url"] == redact(url)
        for text in shown:
            assert_hidden(text, password)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {unique_name}")
        engine.dispose()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[tuple[RedisServer, str]]:
    password = "Alpha@Bravo#Charlie/Delta?Echo%41€"
    try:
        server = RedisServer(extra=["--requirepass", password])
        server.start()
    except (OSError, RuntimeError) as exc:
        if IN_CI:
            pytest.fail(f"CI=true: cannot start redis-server: {exc}", pytrace=False)
        pytest.skip(f"cannot start redis-server: {exc}")
    try:
        yield server, password
    finally:
        server.close()


def test_a_redis_password_with_every_hostile_character_works_encoded_and_never_shows(
    private_redis: tuple[RedisServer, str],
) -> None:
    server, password = private_redis
    url = f"redis://default:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
    store = RedisStore(url, namespace="cw-secrets")
    try:
        store.set(1, "tea")
        assert store.get(1) == "tea"  # the encoded password authenticated
        assert_hidden(repr(store) + repr(Cache(store)), password)
    finally:
        store.close()
    raw = f"redis://default:{password}@127.0.0.1:{server.port}/0"
    with pytest.raises(ConfigurationError, match="percent-encode") as info:
        RedisStore(raw)
    assert_hidden(_chain(info.value), password)


def test_the_lab_reports_name_the_database_without_its_password(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "pa#Hunter2/Xyzzy"
    url = postgres_url.replace("://root@", f"://root:{password}@", 1)
    assert password in url  # trust auth: the password is accepted and ignored
    out_json, out_html = tmp_path / "lab.json", tmp_path / "lab.html"
    argv = ["lab", "--quick", "--case", "pooling", "--database", url]
    assert main([*argv, "--json", str(out_json), "--html", str(out_html)]) == 0
    out, err = capsys.readouterr()
    document = json.loads(out_json.read_text())
    assert document["database"] == redact(url)
    assert "127.0.0.1" in document["database"]
    for text in (out, err, out_json.read_text(), out_html.read_text()):
        assert_hidden(text, password)


NOT_URLS = ["app:Sup3rS3cret@localhost/shop", "Sup3rS3cret@localhost", "user:Sup3rS3cret@"]


@pytest.mark.parametrize("text", NOT_URLS)
def test_strings_that_are_not_urls_are_hidden_up_to_their_last_at(
    text: str, capsys: pytest.CaptureFixture[str], logs: pytest.LogCaptureFixture
) -> None:
    password = "Sup3rS3cret"
    shown = [
        _raises(lambda: SQLSource(text, table="products")),
        _raises(lambda: connect(text)),
        _raises(lambda: RedisStore(text)),
        _raises(lambda: Aggregate(text, "cw_agg", "SELECT 1 AS k", "k")),
    ]
    assert "not a database URL" in shown[0]
    for argv in (
        ["pool", text],
        ["pool", text, "--json"],
        ["aggregate", "status", "cw_agg", "--database", text, "--json"],
        ["lab", "--quick", "--case", "pooling", "--database", text],
        ["lab", "--quick", "--case", "pooling", "--redis", text],
    ):
        assert main(argv) != 0
        out, err = capsys.readouterr()
        shown.append(out + err)
    shown.append(logs.text)
    for output in shown:
        assert_hidden(output, password)
