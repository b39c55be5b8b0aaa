"""Real servers of our own for tests that must start, kill or restart them.

Each helper starts a server from its binaries on a free port, in a temporary directory,
and stops it by the pid it wrote. PostgreSQL and PgBouncer refuse to run as root, so when
we are root they run as the ``postgres`` OS user from a directory it owns (TESTING.md).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cachewise._pgbouncer import (
    PgBouncer,  # noqa: F401 - re-exported for tests
    free_port,
    wait_for_port,
    wait_gone,
)

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def _as_postgres_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _owned_tempdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")
    return path


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def need_pg_bin() -> Path:
    """The PostgreSQL server binaries, or skip (fail under CI=true) saying they are missing."""
    found = pg_bin()
    if found is None:
        reason = "PostgreSQL server binaries are not installed (apt-get install postgresql)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def pg_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries, or None if not installed."""
    found = sorted(glob.glob(PG_BIN_GLOB))
    return Path(found[-1]) if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster (trust auth, user ``root``) on a free port."""

    def __init__(self) -> None:
        binaries = pg_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bin = binaries
        self.dir = _owned_tempdir("cw-pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "root"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        subprocess.run(_as_postgres_user(argv), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                options,
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash (no shutdown checkpoint)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def pid(self) -> int | None:
        return _read_pid(self.data / "postmaster.pid")

    def close(self) -> None:
        """Stop the server if it runs (by its pid) and delete its directory."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                wait_gone(pid, 10.0)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A throwaway redis-server on a free port (its own dir, AOF optional), stopped by pid.

    ``extra`` are more ``redis-server`` arguments (``["--requirepass", "x"]``).
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        appendfsync: str = "always",
        extra: list[str] | None = None,
        tls: bool = False,
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found on PATH")
        self.dir = Path(tempfile.mkdtemp(prefix="cw-redis-"))
        self.port = free_port()
        self.pidfile = self.dir / "redis.pid"
        self.tls = tls
        self.cert = self.dir / "cert.pem"
        """With ``tls=True``: the self-signed certificate (for 127.0.0.1) clients trust."""
        tls_args: list[str] = []
        if tls:
            key = self.dir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-keyout", str(key), "-out", str(self.cert), "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            tls_args = [
                "--tls-port", str(self.port), "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.cert),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.args = [
            "--port", "0" if tls else str(self.port), *tls_args,
            "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--daemonize", "yes", "--pidfile", str(self.pidfile),
            "--logfile", str(self.dir / "redis.log"),
            "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
            *(extra or []),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        subprocess.run(["redis-server", *self.args], check=True, capture_output=True, timeout=30)
        if not wait_for_port(self.port):
            raise RuntimeError(f"redis-server did not listen on {self.port}")
        deadline = time.monotonic() + 5
        while self.pid() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self._wait_loaded()

    def _wait_loaded(self, timeout: float = 60.0) -> None:
        """Wait while Redis answers -LOADING (it listens before its AOF is replayed)."""
        if self.tls:
            return  # a TLS server's tests load no data at start
        deadline = time.monotonic() + timeout
        while True:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
            if not reply.startswith(b"-LOADING"):  # +PONG, or -NOAUTH with requirepass
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} still loading after {timeout}s")
            time.sleep(0.02)

    def pid(self) -> int | None:
        return _read_pid(self.pidfile)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server by its pid (SIGKILL by default: a crash)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        wait_gone(pid, 10.0)

    def close(self) -> None:
        """Kill the server if it runs and delete its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class MemcachedServer:
    """A throwaway memcached on a free port of 127.0.0.1 (foreground child), stopped by pid.

    ``memory_mb`` is its cache size (``-m``); ``item_limit`` its item size limit (``-I``).
    """

    def __init__(self, *, memory_mb: int = 64, item_limit: str = "1m") -> None:
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is not installed (apt-get install -y memcached)")
        self.port = free_port()
        user = ["-u", "root"] if os.geteuid() == 0 else []
        self.argv = [
            binary, "-p", str(self.port), "-U", "0", "-l", "127.0.0.1", *user,
            "-m", str(memory_mb), "-I", item_limit,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if not wait_for_port(self.port):
            self.close()
            raise RuntimeError(f"memcached did not listen on {self.port}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it by its pid (SIGKILL by default: a crash)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        self.process.wait(10)

    def close(self) -> None:
        self.kill()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


class StandbyServer(PostgresServer):
    """A streaming-replication standby of ``primary`` (``pg_basebackup -R``), hot standby."""

    def __init__(self, primary: PostgresServer) -> None:  # no initdb: a copy of the primary
        self.bin = primary.bin
        self.dir = _owned_tempdir("cw-pg-standby-")
        self.data = self.dir / "data"
        self.port = free_port()
        self._run(
            [str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", "root", "-D", str(self.data), "-R", "-X", "stream"]
        )  # fmt: skip
