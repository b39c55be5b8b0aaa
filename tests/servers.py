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

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> bool:
    """Poll until ``host:port`` accepts a TCP connection or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


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


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


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
                _wait_gone(pid, 10.0)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """A PgBouncer in transaction mode on a free port, in front of one PostgreSQL."""

    def __init__(
        self,
        server_host: str = "127.0.0.1",
        server_port: int = 5432,
        *,
        users: tuple[str, ...] = ("root", "postgres"),
        pool_size: int = 20,
        pool_mode: str = "transaction",
    ) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
        self.binary = binary
        self.dir = _owned_tempdir("cw-pgbouncer-")
        self.port = free_port()
        self.server = (server_host, server_port)
        (self.dir / "userlist.txt").write_text("".join(f'"{user}" ""\n' for user in users))
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server_host} port={server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir}/userlist.txt\n"
            f"pool_mode = {pool_mode}\n"
            "max_client_conn = 2000\n"
            f"default_pool_size = {pool_size}\n"
            "max_db_connections = 0\n"
            f"logfile = {self.dir}/pgbouncer.log\n"
            f"pidfile = {self.dir}/pgbouncer.pid\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            "server_login_retry = 1\n"
            f"admin_users = {users[0]}\n"
        )
        if os.geteuid() == 0:
            for name in ("userlist.txt", "pgbouncer.ini"):
                shutil.chown(self.dir / name, "postgres")

    def url(self, database: str = "test", user: str = "root") -> str:
        """A psycopg URL that reaches ``database`` through this PgBouncer."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        argv = [self.binary, "-d", str(self.dir / "pgbouncer.ini")]
        subprocess.run(_as_postgres_user(argv), check=True, capture_output=True, timeout=30)
        if not wait_for_port(self.port):
            log = (self.dir / "pgbouncer.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"pgbouncer did not listen on port {self.port}:\n{log}")

    def pid(self) -> int | None:
        return _read_pid(self.dir / "pgbouncer.pid")

    def stop(self) -> None:
        """Stop PgBouncer by the pid it wrote (SIGINT: close at once)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        if not _wait_gone(pid, 10.0):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
