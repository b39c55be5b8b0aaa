"""Start and stop a PgBouncer of our own (tests, the pooling benchmark and the lab).

PgBouncer refuses to run as root, so when we are root it runs as the ``postgres`` OS
user from a directory that user owns. It is stopped by the pid it wrote, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


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


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until process ``pid`` no longer exists or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class PgBouncer:
    """A PgBouncer on a free port of 127.0.0.1 in front of one PostgreSQL server.

    Transaction mode and trust authentication by default (what TESTING.md describes);
    ``users`` are the role names it accepts (passwords are not checked).
    """

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
        self.dir = Path(tempfile.mkdtemp(prefix="cw-pgbouncer-"))
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
            f"logfile = {self.dir}/pgbouncer.log\n"
            f"pidfile = {self.dir}/pgbouncer.pid\n"
            # psycopg may send these at startup; PgBouncer refuses unknown ones.
            "ignore_startup_parameters = extra_float_digits,options\n"
            "server_login_retry = 1\n"
            f"admin_users = {users[0]}\n"
        )
        if os.geteuid() == 0:
            for path in (self.dir, self.dir / "userlist.txt", self.dir / "pgbouncer.ini"):
                shutil.chown(path, "postgres")

    def url(self, database: str = "test", user: str = "root") -> str:
        """A psycopg URL that reaches ``database`` through this PgBouncer."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start it as a daemon and wait until it listens; RuntimeError with its log if not."""
        argv = [self.binary, "-d", str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        if not wait_for_port(self.port, 15.0):
            log = self.dir / "pgbouncer.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.stop()
            raise RuntimeError(f"pgbouncer did not listen on port {self.port}:\n{tail}")

    def pid(self) -> int | None:
        """The pid PgBouncer wrote, or None if it is not running."""
        try:
            return int((self.dir / "pgbouncer.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop it by its pid (SIGINT: close at once; SIGKILL if it lingers)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        if not wait_gone(pid, 10.0):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5.0)

    def close(self) -> None:
        """Stop it and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
