"""A real Redis Cluster of our own for tests: 3 primaries + 3 replicas, stopped by pid.

Six ``redis-server --cluster-enabled yes`` on free ports of 127.0.0.1 (each also needs
its port + 10000 free: the cluster bus), each in a temporary directory, joined by
``redis-cli --cluster create ... --cluster-replicas 1``. ``cluster-node-timeout`` is
short (1 s) so a killed primary's replica takes over within seconds, and a replica may
always take over (``cluster-replica-validity-factor 0``: an idle test cluster's replica
would otherwise count as too long out of touch with its primary).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cachewise._pgbouncer import wait_for_port

NODE_TIMEOUT_MS = 1000


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_ports(count: int, taken: tuple[int, ...] = ()) -> list[int]:
    """``count`` ports p, each with p and p + 10000 free (the node and its cluster bus).

    Both below the ephemeral range: a port in it can be taken by any outgoing connection
    (a busy test run makes thousands) between this check and the node's bind.
    """
    top = max(10001, _ephemeral_low() - 10000)
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(10000, top - 1)
        if port not in ports and port not in taken and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


class RedisClusterServers:
    """Six Redis nodes in one cluster; ``url`` names one node (the client finds the rest)."""

    def __init__(self, primaries: int = 3, replicas: int = 1) -> None:
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.server is None or self.cli is None:
            raise RuntimeError("redis-server/redis-cli are not installed (apt-get install redis)")
        self.replicas = replicas
        self.ports = _free_ports(primaries * (1 + replicas))
        self.dir = Path(tempfile.mkdtemp(prefix="cw-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on ``port`` from its own directory and nodes.conf."""
        assert self.server is not None
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        argv = [
            self.server, "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(node_dir),
            "--cluster-replica-validity-factor", "0", "--repl-ping-replica-period", "1",
            "--repl-diskless-sync-delay", "0",
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
            "--logfile", str(node_dir / "redis.log"),
        ]  # fmt: skip
        self.processes[port] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        process = self.processes[port]
        if not wait_for_port(port) or not self._answers_as(port, process.pid):
            raise RuntimeError(f"redis-server did not listen on {port}")

    def _answers_as(self, port: int, pid: int) -> bool:
        """Whether the Redis on ``port`` is process ``pid``: a node that could not bind finds
        another's listening there (a cluster of another test), and must not join it."""
        try:
            info = self.cli_run("info", "server", port=port, timeout=5)
        except (subprocess.SubprocessError, OSError):
            return False
        return f"process_id:{pid}\r\n" in info or f"process_id:{pid}\n" in info

    def start(self) -> None:
        assert self.cli is not None
        try:
            for index in range(len(self.ports)):
                self._start_first_time(index)
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [self.cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.close()
            raise

    def _start_first_time(self, index: int, tries: int = 3) -> None:
        """Start node ``index``; a port someone took since it was picked gives way to another."""
        for attempt in range(tries):
            try:
                self.start_node(self.ports[index])
            except RuntimeError:
                process = self.processes.pop(self.ports[index], None)
                if process is not None:
                    process.kill()
                    process.wait()
                if attempt == tries - 1:
                    raise
                self.ports[index] = _free_ports(1, tuple(self.ports))[0]
            else:
                return

    def cli_run(self, *args: str, port: int | None = None, timeout: float = 120) -> str:
        """Run ``redis-cli`` against one node (the first by default); return its stdout."""
        assert self.cli is not None
        out = subprocess.run(
            [self.cli, "-h", "127.0.0.1", "-p", str(port or self.ports[0]), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return out.stdout.decode()

    def _info(self, port: int) -> str:
        """CLUSTER INFO and INFO replication of one node ("" if it does not answer)."""
        try:
            return self.cli_run("cluster", "info", port=port, timeout=5) + self.cli_run(
                "info", "replication", port=port, timeout=5
            )
        except (subprocess.SubprocessError, OSError):
            return ""

    @staticmethod
    def _synced(info: str) -> bool:
        """A primary, or a replica whose link to its primary is up (its first sync done)."""
        return "role:master" in info or "master_link_status:up" in info

    def alive(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0, *, check: bool = True) -> None:
        """Wait until every live node reports cluster_state:ok, every replica is in sync.

        ``check``: also until ``redis-cli --cluster check`` passes (every node up).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [self._info(p) for p in self.alive()]
            if all(
                "cluster_state:ok" in i and "cluster_slots_ok:16384" in i and self._synced(i)
                for i in infos
            ):
                if not check:
                    return
                try:
                    self.cli_run("--cluster", "check", f"127.0.0.1:{self.alive()[0]}", timeout=10)
                except subprocess.CalledProcessError:
                    pass
                else:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis cluster did not reach cluster_state:ok in {timeout}s")

    def primaries(self) -> dict[int, str]:
        """The live primaries: port -> node id (from CLUSTER NODES)."""
        out = self.cli_run("cluster", "nodes", port=self.alive()[0])
        found: dict[int, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2]:
                found[int(parts[1].split(":")[1].split("@")[0])] = parts[0]
        return found

    def wait_failover(self, victim: int, timeout: float = 30.0) -> float:
        """Wait until a replica took over from the dead primary ``victim``; return seconds."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if victim not in self.primaries():
                    self.wait_ok(timeout, check=False)
                    return time.monotonic() - started
            except (subprocess.SubprocessError, OSError, IndexError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over from {victim} in {timeout}s")

    def wait_demoted(self, port: int, timeout: float = 30.0) -> None:
        """Wait until the node on ``port``, restarted after a failover, serves as a replica.

        It comes back believing it is a primary (its nodes.conf says so) until the
        cluster tells it otherwise: a moment, longer on a loaded machine.
        """
        deadline = time.monotonic() + timeout
        while port in self.primaries():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{port} still counts as a primary after {timeout}s")
            time.sleep(0.1)

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        """Stop the node on ``port`` by its pid (SIGKILL by default: a crash)."""
        proc = self.processes.get(port)
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        proc.wait(10)

    def close(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)
