"""Lost writes: run a strategy in a child process, SIGKILL it mid-run, count what is missing.

The child runs the workload's writes (and the periodic write-back flushes) and reports
every write the moment it is acknowledged, through a pipe. At a fixed point between two
flushes it stops and the parent kills it with SIGKILL: no ``finally``, no ``atexit``, no
flush. The parent then recovers as a restarted application would (replaying the
write-back journal when there is one) and counts the acknowledged writes whose version
is not in the database. A newer version in the database covers older ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import select
import shutil
import signal
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from cachewise._types import MISSING
from cachewise.lab.assemble import (
    Environment,
    build_apps,
    make_sources,
    make_store,
    strategies_for,
)
from cachewise.lab.database import create_tables, drop_tables, row, table_names
from cachewise.lab.scenario import Kind, Scenario
from cachewise.lab.workloads import Op

_KILL = b"KILL\n"
_ERR = b"ERR "
CHILD_TIMEOUT = 120.0
"""Seconds the parent waits for the crash child to reach its kill point."""


JOURNAL_KILL_OPS = 150
"""With a journal (fsync per write: slow) the child is killed sooner, before any flush."""


def kill_point(ops: list[Op], flush_every: int, *, journal: bool = False) -> int:
    """How many operations the child runs before it is killed.

    Right after the first write acknowledged past a quarter of the second flush window
    (or, with a journal, past ``JOURNAL_KILL_OPS``): a moment when write-back holds
    acknowledged writes that are not yet in the database.
    """
    start = flush_every + flush_every // 4
    if journal:
        start = min(start, JOURNAL_KILL_OPS)
    start = min(start, (len(ops) * 3) // 4)
    for index in range(start, len(ops)):
        if ops[index].kind in ("write", "race"):
            return index + 1
    return len(ops)


def journal_available() -> bool:
    """Whether the durable write-back journal (writeback/journal.py) is installed."""
    return importlib.util.find_spec("cachewise.writeback.journal") is not None


def measure_loss(
    env: Environment, scenario: Scenario, kind: Kind, strategy: str, *, journal: bool = False
) -> int:
    """Acknowledged writes missing from the database after SIGKILL (and journal replay)."""
    return start(env, scenario, kind, strategy, journal=journal).finish()


def start(
    env: Environment, scenario: Scenario, kind: Kind, strategy: str, *, journal: bool = False
) -> Pending:
    """Fork the child that will be killed; ``finish()`` kills it and counts the loss.

    Fork before starting any thread: the child gets a copy of one thread only.
    """
    return Pending(env, scenario, strategies_for(kind, scenario, strategy), journal)


class Pending:
    """A crash child running its writes; kill it and count with ``finish()``."""

    def __init__(
        self, env: Environment, scenario: Scenario, plan: dict[str, Any], journal: bool
    ) -> None:
        self.env = env
        self.scenario = scenario
        self.plan = plan
        self.journal = journal
        self.tag = uuid.uuid4().hex[:8]
        self.namespace = f"cwlab-crash-{self.tag}"
        """The child's Redis namespace: it dies without cleaning up, the parent does."""
        workload = scenario.workload
        self.names = table_names(workload.tables)
        engine = env.database.engine(crash=True)
        try:
            create_tables(engine, self.names, workload.seed_rows)
        finally:
            engine.dispose()
        stop = kill_point(workload.ops, workload.flush_every, journal=journal)
        self._read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns when forking a process with threads (a lock held by
            # another thread stays locked in the child). The child opens its own
            # connections, never logs, leaves by os._exit, and the parent gives up on
            # it after CHILD_TIMEOUT seconds, so a stuck child cannot hang the lab.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            os.close(self._read_fd)
            code = 1
            try:
                self._child(stop, write_fd)
                code = 0
            except BaseException as exc:
                os.write(write_fd, f"{_ERR.decode()}{type(exc).__name__}: {exc}\n".encode())
            finally:
                os._exit(code)
        os.close(write_fd)

    def journal_path(self, table: str) -> str | None:
        """Where the journal of ``table``'s write-back lives (None without a journal)."""
        if not self.journal:
            return None
        return os.path.join(self.env.database.workdir, f"journal-{table}-{self.tag}")

    def finish(self) -> int:
        """Kill the child at its kill point, recover, count acknowledged writes missing."""
        engine = self.env.database.engine(crash=True)
        try:
            acked = self._kill()
            counted = make_sources(engine, self.names, self.scenario, self.plan)
            if self.journal:
                # The restarted application: opening the journal replays it, closing flushes.
                with _quiet_journal():
                    store = make_store(self.env, self.scenario)
                    apps = build_apps(self.scenario, self.plan, store, counted, self.journal_path)
                    for app in apps.values():
                        app.close()
                    store.shutdown()
            lost = 0
            for (table, key), versions in acked.items():
                found = counted[table].inner.load(key)
                have = 0 if found is MISSING else int(found["v"])
                lost += sum(1 for v in versions if v > have)
            return lost
        finally:
            drop_tables(engine, self.names)
            engine.dispose()
            self._clear_child_store()
            for table in self.names:
                path = self.journal_path(table)
                if path is not None:
                    shutil.rmtree(path, ignore_errors=True)

    def _child(self, stop: int, out: int) -> None:
        """In the child: run the workload's first ``stop`` operations, report each ack."""
        engine = self.env.database.engine(crash=True)
        store = make_store(self.env, self.scenario, self.namespace)
        counted = make_sources(engine, self.names, self.scenario, self.plan)
        apps = build_apps(self.scenario, self.plan, store, counted, self.journal_path)
        workload = self.scenario.workload
        for index, op in enumerate(workload.ops[:stop], 1):
            if op.kind in ("write", "race"):
                apps[op.table].write(op.key, row(op))
                os.write(out, f"{op.table}\t{op.key}\t{op.version}\n".encode())
            elif op.kind == "read":
                apps[op.table].read(op.key)
            if index % workload.flush_every == 0:
                for app in apps.values():
                    app.flush()
        os.write(out, _KILL)
        time.sleep(60.0)  # killed here, between two flushes

    def _clear_child_store(self) -> None:
        if self.env.redis_url is not None:
            make_store(self.env, self.scenario, self.namespace).shutdown()

    def abort(self) -> None:
        """Kill the child and clean up without counting (the measured run failed)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self._read_fd)
        engine = self.env.database.engine(crash=True)
        try:
            drop_tables(engine, self.names)
        finally:
            engine.dispose()
            self._clear_child_store()

    def _kill(self) -> dict[tuple[str, str], list[int]]:
        acked: dict[tuple[str, str], list[int]] = defaultdict(list)
        buffer = b""
        killed = False
        deadline = time.monotonic() + CHILD_TIMEOUT
        with os.fdopen(self._read_fd, "rb", buffering=0) as pipe:
            while True:
                ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:  # stuck: kill it and say so below
                    os.kill(self.pid, signal.SIGKILL)
                    break
                chunk = pipe.read(65536)
                if not chunk:
                    break
                buffer += chunk
                if not killed and _KILL in buffer:
                    os.kill(self.pid, signal.SIGKILL)
                    killed = True
            _, status = os.waitpid(self.pid, 0)
        if not killed:
            said = [ln.decode() for ln in buffer.split(b"\n") if ln.startswith(_ERR)]
            why = said[0][len(_ERR) :] if said else f"exit status {status}, or no progress"
            raise RuntimeError(f"the crash child stopped before its kill point: {why}")
        for line in buffer.split(b"\n"):
            if line and line != _KILL.strip():
                table, key, version = line.decode().split("\t")
                acked[(table, key)].append(int(version))
        return acked


@contextlib.contextmanager
def _quiet_journal() -> Iterator[None]:
    """The journal's notes on repairing a killed writer's segments, held back.

    The lab killed that writer on purpose; "trimming N zero bytes" is expected here, not
    news for the reader of the lab's tables. Errors still get through.
    """
    journal_log = logging.getLogger("cachewise.journal")
    level = journal_log.level
    journal_log.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        journal_log.setLevel(level)
