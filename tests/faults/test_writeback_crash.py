"""Crash tests: a child writes through a journaled write-back and is SIGKILLed; nothing is lost.

Each round starts ``_writer_child.py`` (4 threads writing to SQLite or PostgreSQL through
``WriteBack(journal=..., fsync="always")``, logging every attempted and acknowledged
write, now and then a value the table's CHECK refuses; and an administrator thread that
flushes, then UPDATEs a flushed row outside the cache), kills it with SIGKILL at a
random moment or at a named point inside the code, then reopens the cache on the
journal (replay), flushes, and checks the table and the parked keys:

- every acknowledged write is there, unless a later write or delete of the key
  replaced it (no key holds a value older than its last acknowledged write), and an
  administrator's UPDATE after a ``flush()`` returned is never overwritten by a replay;
- every row holds a value the child really tried to write (nothing invented);
- a key whose last acknowledged operation is a delete is absent (or rewritten later);
- a key whose last acknowledged write the table refused is parked with that value
  (never silently dropped), and no key stays parked with a write older than its last
  acknowledged one.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachewise import Cache, MemoryStore, SQLSource, WriteBack
from cachewise.errors import FlushError
from cachewise.writeback.journal import inspect_journal
from tests.faults._tables import create_table, drop_table, read_rows

CHILD = Path(__file__).with_name("_writer_child.py")

# (point, highest hit count drawn): where the child kills itself, and how late.
NAMED_POINTS = {
    "append.written": 60,  # records written, not yet fsynced
    "append.synced": 60,  # fsynced, not yet acknowledged
    "db.commit": 6,  # inside a flush, before the database COMMIT
    "flushed": 6,  # committed, journal not yet compacted
    "compact.meta": 6,  # flushed sequence durable, segments not yet deleted
    "rotate.created": 6,  # the next segment created, writers still on the active one
    "isolate": 4,  # a batch refused for a row in it, about to be split
    "flush.returned": 4,  # flush() returned and an administrator UPDATEd the row
}
REQUIRED = {"append.written", "append.synced", "db.commit", "flushed", "isolate", "flush.returned"}
RANDOM_ROUNDS = 16

Event = tuple[int, int]
"""A key's operation in write order: (value, 0) a write of value, (value, 1) a delete after
it, (value, 2) a write of ``-value``, which the table refuses."""

WRITE, DELETE, REFUSED = 0, 1, 2
_KINDS = {
    "W": WRITE, "A": WRITE, "u": WRITE, "U": WRITE,
    "d": DELETE, "D": DELETE, "X": REFUSED, "Y": REFUSED,
}  # fmt: skip


class History:
    """What the children attempted and had acknowledged, per key, across rounds."""

    def __init__(self) -> None:
        self.attempted: dict[int, set[Event]] = {}
        self.acked: dict[int, Event] = {}
        self.kill_points: list[str] = []

    def read(self, log: Path) -> None:
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "K":
                self.kill_points.append(parts[1])
            if len(parts) != 3 or parts[0] not in _KINDS:
                continue  # READY, or a line cut by the kill
            tag, key, value = parts[0], int(parts[1]), int(parts[2])
            event = (value, _KINDS[tag])
            if tag in "WduX":  # u: an UPDATE outside the cache, about to commit
                self.attempted.setdefault(key, set()).add(event)
            if tag in "ADYU":
                self.acked[key] = max(self.acked.get(key, event), event)

    def problems(self, rows: dict[int, int], parked: dict[int, int] | None = None) -> list[str]:
        """What is wrong with the table (``rows``) and the parked keys (key -> ``-value``)."""
        parked = parked or {}
        found = self._parked_problems(parked)
        for key in set(self.attempted) | set(rows):
            tried = self.attempted.get(key, set())
            last = self.acked.get(key)
            if key in parked and (last is None or (-parked[key], REFUSED) > last):
                last = (-parked[key], REFUSED)  # a later (unacknowledged) write, refused
            if last is not None and last[1] == REFUSED:
                # Coalescing may have merged the last good writes into the refused one, so
                # the row may be older than them; what matters is the refused write parked.
                if key in rows and (rows[key], WRITE) not in tried:
                    found.append(f"key {key} holds {rows[key]}, never written")
                continue
            if key in rows:
                state: Event = (rows[key], 0)
                if state not in tried:
                    found.append(f"key {key} holds {rows[key]}, never written")
                    continue
            else:
                later_deletes = [e for e in tried if e[1] == 1 and (last is None or e >= last)]
                if last is None or last[1] == 1 or later_deletes:
                    continue
                found.append(f"key {key} is missing; last acknowledged write {last[0]}")
                continue
            if last is not None and state < last:
                found.append(f"key {key} holds {state[0]}, older than acknowledged {last}")
        return found

    def _parked_problems(self, parked: dict[int, int]) -> list[str]:
        found = []
        for key in set(parked) | {k for k, e in self.acked.items() if e[1] == REFUSED}:
            last = self.acked.get(key)
            later = [e for e in self.attempted.get(key, ()) if last is None or e > last]
            if key not in parked:
                if not later:  # an unacknowledged later write may have replaced it
                    found.append(f"key {key}: refused write {last} silently dropped")
                continue
            event = (-parked[key], REFUSED)
            if event not in self.attempted.get(key, set()):
                found.append(f"key {key} parked with {parked[key]}, never written")
            elif last is not None and event < last:
                found.append(f"key {key} still parked with {event}, older than {last}")
        return found


def _run_child(
    url: str, table: str, journal: Path, log: Path, base: int, kill: tuple[str, int] | None
) -> None:
    args = [sys.executable, str(CHILD), url, table, str(journal), str(log), str(base)]
    if kill is not None:
        args += [kill[0], str(kill[1])]
    errors = log.with_suffix(".err")
    with errors.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while b"READY" not in (log.read_bytes() if log.exists() else b""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"child did not start: {errors.read_text()[-3000:]}")
            time.sleep(0.01)
        if kill is not None:
            try:
                # Generous: on a loaded machine, through a pooler, the fourth flush can take
                # seconds; a point not reached at all is reported by _check_named_points.
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()  # the point was not reached in time: a random kill instead
        else:
            time.sleep(random.uniform(0.02, 0.4))
            proc.kill()  # SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -9, errors.read_text()[-3000:]


def _recover_and_read(url: str, table: str, journal: Path) -> tuple[dict[int, int], dict[int, int]]:
    """Reopen the cache on the journal (replay), flush it; read the table and parked keys."""
    with Cache(
        MemoryStore(), SQLSource(url, table=table), write=WriteBack(journal=journal)
    ) as cache:
        try:
            cache.flush()
        except FlushError as exc:
            if not exc.rejected:
                raise  # an outage, not the refused rows
        parked = {k: int(p.value["v"]) for k, p in cache.rejected().items() if isinstance(k, int)}
    report = inspect_journal(journal)
    assert not report.damage
    assert all(r.flushed or r.rejected for r in report.records), "unflushed after recovery"
    assert {r.key for r in report.records if r.rejected} == set(parked)
    return read_rows(url, table), parked


def _crash_rounds(url: str, table: str, tmp_path: Path) -> History:
    journal = tmp_path / "journal"
    history = History()
    kills: list[tuple[str, int] | None] = [
        (point, random.randint(1, top)) for point, top in NAMED_POINTS.items()
    ]
    kills += [None] * RANDOM_ROUNDS
    random.shuffle(kills)
    for number, kill in enumerate(kills, start=1):
        log = tmp_path / f"round-{number}.log"
        _run_child(url, table, journal, log, number * 10_000_000, kill)
        history.read(log)
        rows, parked = _recover_and_read(url, table, journal)
        problems = history.problems(rows, parked)
        assert not problems, f"round {number} (kill {kill}): {problems[:5]}"
    acked = sum(1 for _ in history.acked)
    assert acked > 10, "the children acknowledged almost nothing: the test proved little"
    return history


@pytest.fixture
def pg_table(postgres_url: str, unique_name: str) -> Iterator[str]:
    create_table(postgres_url, unique_name, check=True)
    yield unique_name
    drop_table(postgres_url, unique_name)


def _check_named_points(history: History) -> None:
    missed = REQUIRED - set(history.kill_points)
    # A point is drawn once per run with a small hit count; each is reached in practice,
    # but say which one was not rather than pass silently.
    assert not missed, f"kill points never reached: {sorted(missed)}"


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_write_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/crash.db"
    create_table(url, "rows", check=True)
    history = _crash_rounds(url, "rows", tmp_path)
    _check_named_points(history)


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_loses_no_acknowledged_write_postgres(
    postgres_url: str, pg_table: str, tmp_path: Path
) -> None:
    history = _crash_rounds(postgres_url, pg_table, tmp_path)
    _check_named_points(history)


def test_the_checker_catches_a_lost_write() -> None:
    history = History()
    history.attempted = {1: {(5, 0), (7, 0)}, 2: {(3, 0), (3, 1)}}
    history.acked = {1: (7, 0), 2: (3, 1)}
    assert history.problems({1: 7}) == []
    assert history.problems({1: 5}) != []  # older than acknowledged
    assert history.problems({}) != []  # acknowledged write missing
    assert history.problems({1: 7, 2: 3}) != []  # acknowledged delete undone
    assert history.problems({1: 9}) != []  # a value never written


def test_the_checker_catches_an_overwritten_update_and_a_dropped_refused_write() -> None:
    history = History()
    history.attempted = {1: {(5, 0), (6, 0)}, 2: {(3, 0), (4, 2)}}
    history.acked = {1: (6, 0), 2: (4, 2)}  # 1: UPDATEd to 6 after a flush; 2: refused 4
    assert history.problems({1: 6, 2: 3}, {2: -4}) == []
    assert history.problems({1: 5, 2: 3}, {2: -4}) != []  # the replay undid the UPDATE
    assert history.problems({1: 6, 2: 3}, {}) != []  # the refused write vanished
    history.attempted[2].add((9, 0))
    history.acked[2] = (9, 0)
    assert history.problems({1: 6, 2: 9}, {2: -4}) != []  # parked though written since
    history.attempted[2].add((10, 2))  # then refused, never acknowledged, yet replayed:
    assert history.problems({1: 6, 2: 3}, {2: -10}) == []  # it replaced the write of 9
