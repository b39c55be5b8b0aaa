"""Journal faults on real files and a real small filesystem (issue 11, items 6 and 7).

- Rotation: a process SIGKILLed while a rotation creates the next segment, with other
  writers still appending to the active one, must never leave a torn record in a
  segment that is no longer the newest (start-up would refuse the journal as corrupt).
- Full disk: with the journal on a tmpfs of a few MiB (mounted by the test; root needed),
  a flush frees the flushed segments even though rotating needs space, and a restart
  whose disk is full of flushed segments starts.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachewise import Cache, MemoryStore, WriteBack
from cachewise.errors import JournalError
from cachewise.writeback import _journal_format as fmt
from cachewise.writeback.journal import FileJournal
from tests.conftest import IN_CI
from tests.helpers import FlakySource

ROTATION_CHILD = Path(__file__).with_name("_rotation_child.py")


# -- item 7: a kill in the middle of a rotation ---------------------------------------------


def test_a_kill_during_rotation_leaves_a_torn_record_only_in_the_newest_segment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    log = tmp_path / "child.log"
    errors = tmp_path / "child.err"
    with errors.open("wb") as err:
        proc = subprocess.run(
            [sys.executable, str(ROTATION_CHILD), str(path), str(log)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=120,
            check=False,
        )
    assert proc.returncode == -9, errors.read_text()[-3000:]
    lines = log.read_text().splitlines()
    assert "C" in lines, "the child was not killed in a rotation"
    after = {int(line.split()[1]) for line in lines[lines.index("C") :] if line[:2] == "W "}
    acked = {int(line.split()[1]) for line in lines if line[:2] == "A "}
    assert acked & after, "no append landed while the next segment was being created"

    # The kill may land in the middle of any copy into the active segment: take the one
    # of its last record (appended after the next segment appeared) and leave it half
    # copied, as such a kill does (the rest of a preallocated segment is zeros).
    holders = []
    for segment in sorted(path.glob("*.seg")):
        records = fmt.scan(segment.read_bytes()).records
        if any(r.seq in after for r in records):
            holders.append((segment, records[-1]))
    assert len(holders) == 1
    segment, last = holders[0]
    assert last.seq in after
    middle = last.offset + (last.end - last.offset) // 2
    with segment.open("r+b") as f:
        f.seek(middle)
        f.write(b"\x00" * (last.end - middle))
    acked.discard(last.seq)  # the copy the kill interrupted: never acknowledged

    journal = FileJournal(path)  # JournalCorruptError if the torn record is not the newest
    try:
        replayed = {seq for seq, _, _ in journal.replay()}
    finally:
        journal.close()
    assert acked <= replayed


# -- item 6: a full disk ------------------------------------------------------------------


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 4 MiB tmpfs of our own, unmounted afterwards."""
    where = Path(tempfile.mkdtemp(prefix="cw-smallfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        where.rmdir()
        reason = f"cannot mount a tmpfs: {mounted.stderr.decode().strip() or 'not root?'}"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def _fill(directory: Path) -> int:
    """Write a filler file until the filesystem is full; return its size."""
    size = 0
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            size += os.write(fd, b"\xff" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return size


SEGMENT = 256 << 10
ROW = {"payload": "r" * 1000}


def test_a_flush_frees_flushed_segments_though_the_disk_is_too_full_to_rotate(
    small_fs: Path,
) -> None:
    source = FlakySource()
    source.down = True  # nothing flushes: the journal grows until the disk is full
    journal = FileJournal(small_fs / "journal", fsync="no", segment_bytes=SEGMENT)
    policy = WriteBack(flush_interval=3600, max_dirty=10**6, max_batch=10**6)
    cache = Cache(MemoryStore(max_entries=10**6), source, write=policy, journal=journal)
    try:
        written = 0
        refused: JournalError | None = None
        while written < 100_000 and refused is None:
            try:
                cache.write(written, ROW)
                written += 1
            except JournalError as exc:
                refused = exc
        assert refused is not None
        assert "No space left on device" in str(refused)
        assert written > 1000  # the disk, not something else, stopped it
        source.down = False
        assert cache.flush() == written  # meta is updated in place: no new block needed
        assert len(journal.files()) <= 2  # the flushed segments are gone
        for key in range(written, written + 1000):  # and there is room to write again
            cache.write(key, ROW)
        assert cache.flush() == 1000
    finally:
        cache.close()
    assert len(source.data) == written + 1000


_FLUSHED_THEN_KILLED = """
import os, signal, sys
from cachewise.writeback import journal as journal_mod
from cachewise.writeback.journal import FileJournal

segment = int(sys.argv[2])
journal = FileJournal(sys.argv[1], fsync="no", segment_bytes=segment)
seq = 0
# Past 700 records, and the active segment nearly full: a restart trimming its unused
# preallocated tail finds almost no room there.
while seq < 700 or journal._active.segment.size < segment - 2200:
    seq += 1
    journal.append([(seq, seq, {"payload": "r" * 1000})])
print(seq, flush=True)

def kill(point):
    if point == "compact.meta":  # the flushed sequence is durable, no segment deleted yet
        os.kill(os.getpid(), signal.SIGKILL)

journal_mod.fault_hook = kill
journal.flushed(seq)
"""


def test_a_restart_with_flushed_segments_on_a_full_disk_starts(small_fs: Path) -> None:
    path = small_fs / "journal"
    child = subprocess.run(
        [sys.executable, "-c", _FLUSHED_THEN_KILLED, str(path), str(SEGMENT)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr.decode()[-3000:]
    last = int(child.stdout)
    held = sum(p.stat().st_size for p in path.glob("*.seg"))
    assert held > 2 * SEGMENT  # every record flushed, and all of them still on disk
    assert _fill(small_fs) > 0  # the disk is full now

    reopened = FileJournal(path, fsync="no", segment_bytes=SEGMENT)
    try:
        assert list(reopened.replay()) == []
        assert reopened.last_seq == last
        assert len(list(path.glob("*.seg"))) == 1  # the flushed ones made way for it
        reopened.append([(last + 1, last + 1, ROW)])
    finally:
        reopened.close()
