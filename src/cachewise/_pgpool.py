"""Start and stop a Pgpool-II of our own (tests, the pooling benchmark and the lab).

Connection-pooling mode in front of PostgreSQL servers (``raw`` clustering: no
replication of its own; or ``streaming_replication`` with a primary and standbys, to
show load balancing). It runs in the foreground as our child, all its files in one
temporary directory, and is stopped by its pid, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cachewise._pgbouncer import free_port, wait_for_port


class Pgpool:
    """A Pgpool-II on a free port of 127.0.0.1 in front of PostgreSQL ``backends``.

    ``backends`` are ``(host, port, weight)``; the first is the primary. With one backend
    the mode is ``raw`` (pooling only); with more, ``streaming_replication`` with
    ``load_balance`` as given. ``children`` is ``num_init_children``: how many client
    connections Pgpool-II serves at once (each client holds one child for its session).
    """

    def __init__(
        self,
        backends: Sequence[tuple[str, int, int]] = (("127.0.0.1", 5432, 1),),
        *,
        children: int = 32,
        max_pool: int = 1,
        load_balance: bool = False,
        user: str = "root",
    ) -> None:
        binary = shutil.which("pgpool") or "/usr/sbin/pgpool"
        if not Path(binary).exists():
            raise RuntimeError("pgpool is not installed (apt-get install -y pgpool2)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="cw-pgpool-"))
        self.port = free_port()
        self.children = children
        mode = "raw" if len(backends) == 1 else "streaming_replication"
        lines = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            "pcp_listen_addresses = ''",
            f"pcp_port = {free_port()}",
            f"unix_socket_directories = '{self.dir}'",
            f"pcp_socket_dir = '{self.dir}'",
            f"pid_file_name = '{self.dir}/pgpool.pid'",
            f"logdir = '{self.dir}'",
            f"backend_clustering_mode = '{mode}'",
            f"num_init_children = {children}",
            f"max_pool = {max_pool}",
            "connection_cache = on",
            "enable_pool_hba = off",
            "health_check_period = 0",
            "sr_check_period = 0",
            f"sr_check_user = '{user}'",
            f"load_balance_mode = {'on' if load_balance else 'off'}",
            "log_min_messages = warning",
        ]
        for i, (host, port, weight) in enumerate(backends):
            lines += [
                f"backend_hostname{i} = '{host}'",
                f"backend_port{i} = {port}",
                f"backend_weight{i} = {weight}",
                f"backend_flag{i} = '{'ALWAYS_PRIMARY' if i == 0 else 'DISALLOW_TO_FAILOVER'}'",
            ]
        (self.dir / "pgpool.conf").write_text("\n".join(lines) + "\n")
        (self.dir / "pcp.conf").write_text("")
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "test", user: str = "root") -> str:
        """A psycopg URL that reaches ``database`` through this Pgpool-II."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start it (a foreground child) and wait until it listens; RuntimeError if not."""
        log = (self.dir / "pgpool.log").open("wb")
        argv = [
            self.binary, "-n", "-f", str(self.dir / "pgpool.conf"),
            "-F", str(self.dir / "pcp.conf"), "-m", "fast",
        ]  # fmt: skip
        # Its own process group: a stop that must SIGKILL takes the children with it.
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if not wait_for_port(self.port, 30.0):
            tail = (self.dir / "pgpool.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"pgpool did not listen on port {self.port}:\n{tail}")

    def pid(self) -> int | None:
        """The pid of the main Pgpool-II process, or None if it is not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def stop(self) -> None:
        """Stop it by its pid (SIGINT: fast shutdown; SIGKILL if it lingers)."""
        pid = self.pid()
        if pid is None:
            return
        assert self.process is not None
        os.kill(pid, signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)  # the group we started: its main pid is its id
            self.process.wait(10)

    def close(self) -> None:
        """Stop it and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Pgpool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
