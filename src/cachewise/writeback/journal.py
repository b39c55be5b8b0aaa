"""The write-back journal: an append-only, CRC-checked local log that makes writes durable.

Design. The journal is a directory of segment files (``<index>.seg``, records in
``_journal_format``), a ``meta`` file holding the highest sequence known flushed, a
``rejected`` file holding the writes the source refused (parked keys), and a ``LOCK``
file (``flock``: one process per journal; the kernel drops the lock when the process
dies, so a crash never leaves it stuck). The directory is 0700 and its files 0600
(they hold row contents); existing ones are tightened on open. Appends are stores into
the newest segment's memory map (no user-space buffer: a process crash loses nothing
that ``append`` returned for; ``fsync`` is about the *machine* crashing).

- ``fsync="always"``: ``append`` returns after an ``fsync`` that covers its records.
  Group commit: writers write under ``_write_lock``, then sync under ``_sync_lock``; a
  writer whose bytes an earlier ``fsync`` already covered returns without its own.
- ``"everysec"``: a background thread fsyncs once a second when there is new data.
- ``"no"``: the OS writes back when it likes.

A failed ``fsync`` (or write) is never retried and trusted: Linux may have dropped the
dirty pages and reports the error once. The write is not acknowledged, JournalError is
raised, and every later append is refused until the journal is reopened (reopening
replays what the file really holds).

Rotation. The next segment is created (preallocated, fsynced) under a temporary name
with no lock writers need, then renamed in and swapped for the active one under the
write lock. Appends are copies made under that lock, so no append is half done when
the new segment appears: a record torn by a crash can only be in the newest segment.

Flushed. ``flushed(upto)`` records that every sequence at or below ``upto`` is in the
source. It makes ``upto`` durable in ``meta`` before it returns (so a flush is never
acknowledged before its watermark is: a restart never replays a record at or below it,
which would write an old value over a later change made outside the cache), then
deletes the closed segments that hold only such records, then rotates a fully flushed
active segment out (a drained journal is one empty segment). Deleting comes first: on
a full disk a rotation may fail, and the space must still come back. While the source
is down nothing is flushed, so closed segments are rewritten instead: the latest record
per key above ``upto`` goes to a temporary file that is fsynced and renamed over the
newest of them. Both keep the journal proportional to the dirty set, not to history.
The directory is fsynced after every create, rename and delete.

Rejected writes. ``park(records)`` durably replaces the set of writes the source refused
(``rejected``, replaced whole by a temporary file and a rename): they stay out of the
way of the watermark, and a restart replays them like any unflushed write (the flush
then refuses them again, and parks them again). A parked record is dropped at open when
a later record of the same key exists.

Open and damage. Opening scans every segment before anything is replayed. A torn last
record of the newest segment (a crash mid-append: nothing intact follows it) is
truncated; the zero tail of a preallocated segment is trimmed; segments the meta file
says are flushed are deleted (so a restart frees space before it needs any); leftover
temporary files are deleted. Each of these is logged with its byte count. Anything else
that fails its checks raises JournalCorruptError naming the file and offset, and
nothing is replayed or flushed.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cachewise._types import Key, check_positive, check_seconds
from cachewise.codecs import Codec, default_codec
from cachewise.errors import (
    ClosedError,
    CodecError,
    ConfigurationError,
    JournalCorruptError,
    JournalError,
)
from cachewise.policies import FsyncMode, WriteBack
from cachewise.stores.base import Store
from cachewise.writeback import _journal_format as fmt

logger = logging.getLogger("cachewise.journal")

__all__ = ["FileJournal", "Inspection", "fault_hook", "inspect_journal", "open_journal"]

SEGMENT_BYTES: Final = 16 << 20
"""Rotate the active segment past this size (its records are then deleted or compacted)."""

_SUFFIX: Final = ".seg"
_META: Final = "meta"
_LOCK: Final = "LOCK"
_REJECTED: Final = "rejected"
_TMP_SUFFIX: Final = ".tmp"
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600

fault_hook: Callable[[str], None] | None = None
"""Test seam: called with a point name at each crash point; crash tests SIGKILL there.

Points: ``append.written`` (records written, not yet fsynced), ``append.synced``
(fsynced, not yet acknowledged), ``flushed`` (the source committed, the journal not yet
told), ``compact.meta`` (flushed sequence durable, segments not yet deleted),
``compact.renamed`` (a rewritten segment renamed in, older ones not yet deleted),
``rotate.created`` (the next segment created under its temporary name while writers
still append to the active one), ``rotate.renamed`` (the next segment renamed in, not
yet the active one: the write lock is held).
"""


def _fault(point: str) -> None:
    hook = fault_hook
    if hook is not None:
        hook(point)


def open_journal(policy: WriteBack, store: Store) -> FileJournal:
    """Open the journal a WriteBack policy names (``Cache`` calls this)."""
    if policy.journal is None:
        raise ConfigurationError("this WriteBack has no journal")
    if isinstance(policy.journal, str) and policy.journal == "redis":
        raise ConfigurationError(
            "journal='redis' keeps the dirty set in Redis (the shared write-back runtime), "
            "not in a local journal"
        )
    return FileJournal(policy.journal, fsync=policy.fsync)


@dataclass(slots=True)
class _Segment:
    index: int
    path: Path
    size: int
    records: int = 0
    max_seq: int = 0


class _Active:
    """The segment being appended to: preallocated and written through a memory map."""

    __slots__ = ("capacity", "fd", "map", "open", "segment")

    def __init__(self, segment: _Segment, fd: int, capacity: int) -> None:
        self.segment = segment
        self.fd = fd
        self.capacity = capacity
        self.map = mmap.mmap(fd, capacity)
        self.open = True

    def seal(self) -> None:
        """Unmap, cut the zero tail off and fsync (the size change too); close the file."""
        try:
            self.map.close()
            os.ftruncate(self.fd, self.segment.size)
            os.fsync(self.fd)
        finally:
            self.release()

    def release(self) -> None:
        """Unmap and close without syncing (once; the fd number is never closed twice)."""
        if self.open:
            self.open = False
            self.map.close()
            os.close(self.fd)


def _segment_name(index: int) -> str:
    return f"{index:016d}{_SUFFIX}"


def _segment_paths(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in directory.iterdir():
        stem = entry.name[: -len(_SUFFIX)]
        if entry.name.endswith(_SUFFIX) and stem.isdigit():
            found.append((int(stem), entry))
    return sorted(found)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _replace_durably(path: Path, data: bytes) -> None:
    """Make ``data`` the whole content of ``path``, atomically and durably.

    A temporary file is written, fsynced and renamed over ``path``, then the directory
    is fsynced: a crash leaves the old file or the new one (and a ``.tmp`` that opening
    deletes), never a mix.
    """
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_meta(directory: Path) -> int:
    path = directory / _META
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    flushed = fmt.decode_meta(data)
    if flushed is None:
        raise JournalCorruptError(str(path), 0, "damaged meta file")
    return flushed


class _MetaFile:
    """The durable flushed sequence: two slots overwritten in turn, each with its CRC.

    An update is one ``pwrite`` of a slot and one ``fdatasync``: no rename, and no new
    disk block, so it works on a full disk. A crash tearing the slot being written
    leaves the other, which holds the previous value (never a newer one than was made
    durable). A failed sync is retried by writing the slot again, which dirties the page
    again: nothing is trusted that was not written after the failure.
    """

    def __init__(self, directory: Path, flushed: int) -> None:
        self.path = directory / _META
        data = self.path.read_bytes() if self.path.exists() else b""
        slots = fmt.decode_meta_slots(data) if data else None
        if slots is None or len(slots) != 2:
            # New journal, or the one-slot layout of earlier versions: write both slots
            # once (temporary file, rename), so later updates are in place.
            _replace_durably(self.path, fmt.encode_meta(flushed) * 2)
            slots = [flushed, flushed]
        self.fd = os.open(self.path, os.O_RDWR)
        self.value = flushed
        values = [-1 if slot is None else slot for slot in slots]
        self._next = 0 if values[0] < values[1] else 1
        """The slot not holding the newest value: the one the next update overwrites."""

    def write(self, flushed: int) -> None:
        """Make ``flushed`` durable (raises OSError if the disk refuses)."""
        os.pwrite(self.fd, fmt.encode_meta(flushed), self._next * fmt.META_SLOT)
        os.fdatasync(self.fd)
        self._next ^= 1
        self.value = flushed

    def close(self) -> None:
        os.close(self.fd)


def _tighten(directory: Path) -> None:
    """Make the journal directory 0700 and its files 0600: they hold row contents."""
    try:
        if directory.stat().st_mode & 0o777 != _DIR_MODE:
            directory.chmod(_DIR_MODE)
        for entry in directory.iterdir():
            if entry.is_file() and entry.stat().st_mode & 0o777 != _FILE_MODE:
                entry.chmod(_FILE_MODE)
    except OSError as exc:
        logger.warning("journal %s: cannot restrict its permissions: %s", directory, exc.strerror)


@dataclass(frozen=True)
class Damage:
    """A place where a segment stops being readable."""

    segment: str
    offset: int
    reason: str
    torn_tail: bool
    """True for a crash mid-append (truncated on open); False for corruption (fatal)."""


def _classify(path: Path, data: bytes, scan: fmt.Scan, last: bool) -> Damage | None:
    """Whether a segment's problem (if any) is a torn tail or corruption."""
    if scan.problem is None:
        return None
    if scan.end == 0:
        # A segment created but its header not (fully) written: a crash at creation.
        unwritten = data.count(0) == len(data) or (
            len(data) < len(fmt.MAGIC) and fmt.MAGIC.startswith(data)
        )
        torn = last and unwritten
        return Damage(str(path), 0, scan.problem, torn)
    torn = last and fmt.valid_record_after(data, scan.end) is None
    return Damage(str(path), scan.end, scan.problem, torn)


class FileJournal:
    """A local append-only journal for write-back (the ``Journal`` the Flusher uses).

    ``path`` is a directory (created if missing). ``fsync`` is ``"always"``,
    ``"everysec"`` or ``"no"`` (Redis AOF's meanings; see docs/write-back.md).
    Opening takes an exclusive lock and scans the journal (JournalCorruptError on
    damage other than a torn tail); :meth:`replay` then yields what is not yet flushed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncMode = "everysec",
        codec: Codec | None = None,
        segment_bytes: int = SEGMENT_BYTES,
        sync_interval: float = 1.0,
    ) -> None:
        if fsync not in ("always", "everysec", "no"):
            raise ConfigurationError(f"unknown fsync mode {fsync!r}")
        check_positive(segment_bytes, "segment_bytes", integer=True)
        check_seconds(sync_interval, "sync_interval")
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigurationError(f"journal path must be a path, got {path!r}")
        self.path = Path(path)
        self.fsync: FsyncMode = fsync
        self._codec = codec or default_codec()
        self._encoder = fmt.RecordEncoder(self._codec)
        self._segment_bytes = segment_bytes
        self._sync_interval = sync_interval
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._written = 0
        self._synced = 0
        self._failed: JournalError | None = None
        self._closed = False
        self._closed_segments: list[_Segment] = []
        self._flushed = 0
        self._meta_flushed = 0
        self._compacted_bytes = 0
        self._rotate_lock = threading.Lock()
        self._unsealed: list[tuple[_Active, int]] = []
        """Rotated-out segments not yet fsynced, with the byte count they end at."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._compact_wanted = False
        self._parked_file = True
        """Whether the rejected file exists (``park([])`` then deletes it)."""
        self._dir_unsynced = False
        """A segment was renamed in and the directory not yet fsynced (``_sync`` does it)."""
        self._highest_index = 0
        self._lock_fd = self._take_lock()
        self._meta: _MetaFile | None = None
        self._active = self._open()
        self._thread = threading.Thread(
            target=self._maintain, name=f"cachewise-journal-{self.path.name}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"FileJournal({str(self.path)!r}, fsync={self.fsync!r})"

    # -- open ------------------------------------------------------------------------

    def _open(self) -> _Active:
        """Replay-scan the journal, open its meta file and start a fresh active segment."""
        try:
            self._replayed, self._last_seq = self._load()
            self._meta = _MetaFile(self.path, self._flushed)
            active = self._create_segment(self._next_index(), self._segment_bytes)
            try:
                self._install(active)
                _fsync_dir(self.path)
            except BaseException:
                active.release()
                raise
            self._dir_unsynced = False
        except OSError as exc:
            self._release_open()
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"cannot open journal {self.path}: {exc.strerror}") from exc
        except BaseException:
            self._release_open()
            raise
        return active

    def _release_open(self) -> None:
        if self._meta is not None:
            self._meta.close()
        os.close(self._lock_fd)

    def _take_lock(self) -> int:
        try:
            if self.path.exists() and not self.path.is_dir():
                raise ConfigurationError(f"journal path {self.path} exists and is not a directory")
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.mkdir(mode=_DIR_MODE)
                _fsync_dir(self.path.parent)
            _tighten(self.path)
            fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise JournalError(
                f"journal {self.path} is in use by another process (or another cache)"
            ) from exc
        return fd

    def _load(self) -> tuple[list[tuple[int, Key, Any]], int]:
        """Scan every segment; return the unflushed records (oldest first) and the max seq."""
        for leftover in self.path.glob("*" + _TMP_SUFFIX):
            # A rewrite, rotation or meta update that never got renamed in: not journal
            # data (its records are still where they were before).
            logger.warning(
                "journal %s: deleting %s (%d bytes), a temporary file a crash left behind",
                self.path,
                leftover.name,
                leftover.stat().st_size,
            )
            leftover.unlink()
        flushed = _read_meta(self.path)
        self._flushed = self._meta_flushed = flushed
        last_seq = flushed
        latest: dict[bytes, tuple[Path, fmt.RawRecord]] = {}
        newest_seq: dict[bytes, int] = {}
        """Per key, the highest sequence of any record (a parked write older than it is void)."""
        paths = _segment_paths(self.path)
        flushed_segments: list[_Segment] = []
        for position, (index, path) in enumerate(paths):
            segment = self._scan_segment(
                index,
                path,
                last=position == len(paths) - 1,
                flushed=flushed,
                latest=latest,
                newest_seq=newest_seq,
            )
            if segment is None:
                continue
            last_seq = max(last_seq, segment.max_seq)
            if segment.max_seq <= flushed:
                flushed_segments.append(segment)
            else:
                self._closed_segments.append(segment)
        self._highest_index = max((index for index, _ in paths), default=0)
        self._drop_at_open(flushed_segments)
        self._load_parked(latest, newest_seq)
        replay: list[tuple[int, Key, Any]] = []
        for path, record in sorted(latest.values(), key=lambda item: item[1].seq):
            try:
                key, value = fmt.decode_payload(self._codec, record.kind, record.payload)
            except CodecError as exc:
                raise JournalCorruptError(str(path), record.offset, f"undecodable: {exc}") from exc
            replay.append((record.seq, key, value))
        return replay, last_seq

    def _scan_segment(
        self,
        index: int,
        path: Path,
        *,
        last: bool,
        flushed: int,
        latest: dict[bytes, tuple[Path, fmt.RawRecord]],
        newest_seq: dict[bytes, int],
    ) -> _Segment | None:
        """Scan one segment at open: mend a torn tail or trim padding, note its records.

        Adds each key's latest unflushed record to ``latest`` and its highest sequence
        to ``newest_seq``; returns None for a segment that held nothing (now deleted).
        """
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read journal segment {path}: {exc.strerror}") from exc
        scan = fmt.scan(data)
        damage = _classify(path, data, scan, last=last)
        if damage is not None and not damage.torn_tail:
            raise JournalCorruptError(damage.segment, damage.offset, damage.reason)
        if damage is not None:
            self._truncate_torn(path, damage, len(data))
            if damage.offset == 0:
                return None
        elif scan.padding:
            self._truncate_padding(path, scan.end, scan.padding)
        segment = _Segment(index, path, scan.end, len(scan.records))
        for record in scan.records:
            segment.max_seq = max(segment.max_seq, record.seq)
            key_bytes = record.key_bytes()
            if record.seq > newest_seq.get(key_bytes, 0):
                newest_seq[key_bytes] = record.seq
            if record.seq > flushed:
                seen = latest.get(key_bytes)
                if seen is None or seen[1].seq < record.seq:
                    latest[key_bytes] = (path, record)
        return segment

    def _drop_at_open(self, segments: list[_Segment]) -> None:
        """Delete segments the meta file says are flushed: frees space before any is needed.

        A crash between making the watermark durable and deleting them leaves them; on a
        full disk the new segment could not be created otherwise.
        """
        for segment in segments:
            logger.info(
                "journal %s: deleting %s (%d bytes): every record in it is flushed",
                self.path,
                segment.path.name,
                segment.size,
            )
            try:
                segment.path.unlink()
            except OSError as exc:
                raise JournalError(f"cannot delete flushed segment {segment.path}") from exc
        if segments:
            _fsync_dir(self.path)

    def _load_parked(
        self, latest: dict[bytes, tuple[Path, fmt.RawRecord]], newest_seq: dict[bytes, int]
    ) -> None:
        """Add the parked writes no later record replaced to ``latest`` (they replay)."""
        path = self.path / _REJECTED
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._parked_file = False
            return
        except OSError as exc:
            raise JournalError(f"cannot read {path}: {exc.strerror}") from exc
        scan = fmt.scan(data, fmt.REJECTED_MAGIC)
        if scan.problem is not None:
            # Written whole and renamed in: any damage is corruption, never a torn tail.
            raise JournalCorruptError(str(path), scan.end, scan.problem)
        for record in scan.records:
            key_bytes = record.key_bytes()
            if newest_seq.get(key_bytes, 0) > record.seq:
                continue  # written again after it was refused: that write replaces it
            seen = latest.get(key_bytes)
            if seen is None or seen[1].seq < record.seq:
                latest[key_bytes] = (path, record)

    def _truncate_torn(self, path: Path, damage: Damage, size: int) -> None:
        logger.warning(
            "journal %s: torn last record at offset %d (%s); truncating %d bytes",
            path,
            damage.offset,
            damage.reason,
            size - damage.offset,
        )
        try:
            if damage.offset == 0:
                path.unlink()  # a segment whose header never made it: nothing in it
                _fsync_dir(self.path)
                return
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, damage.offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalError(f"cannot truncate torn journal tail {path}") from exc

    def _truncate_padding(self, path: Path, end: int, padding: int) -> None:
        """Cut the zero tail a crash left on a preallocated segment, saying how much.

        Unused preallocated space after a killed process; after a machine crash it may
        also be records whose pages never reached the disk (unacknowledged with
        ``fsync="always"``).
        """
        logger.warning(
            "journal %s: %d zero bytes after the last record at offset %d (space "
            "preallocated by a process that did not close the journal); trimming them",
            path,
            padding,
            end,
        )
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, end)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalError(f"cannot truncate journal segment {path}") from exc

    def _next_index(self) -> int:
        return self._highest_index + 1

    def _create_segment(self, index: int, capacity: int) -> _Active:
        """A new segment under a temporary name, its blocks reserved up front and mapped.

        ``posix_fallocate`` reserves the disk space now, so a full disk is an error here
        rather than a SIGBUS on a later store into the map. Appends are then a memory copy
        into the page cache (which a killed process cannot lose) with no system call and
        no GIL release per write; ``fsync`` on the file makes them durable. The segment
        joins the journal when :meth:`_install` renames it in.
        """
        path = self.path / _segment_name(index)
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        capacity = max(capacity, len(fmt.MAGIC) + 1)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except OSError as exc:
            raise JournalError(f"cannot create journal segment {path}: {exc.strerror}") from exc
        try:
            _write_all(fd, fmt.MAGIC)
            os.posix_fallocate(fd, 0, capacity)
            os.fsync(fd)
            return _Active(_Segment(index, tmp, len(fmt.MAGIC)), fd, capacity)
        except OSError as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise JournalError(f"cannot create journal segment {path}: {exc.strerror}") from exc

    def _install(self, active: _Active) -> None:
        """Rename a created segment to its real name (the directory fsync comes later)."""
        final = self.path / _segment_name(active.segment.index)
        os.rename(active.segment.path, final)
        active.segment.path = final
        self._dir_unsynced = True

    # -- the Journal protocol --------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest sequence this journal has seen (records or flushed): continue above it."""
        return self._last_seq

    def replay(self) -> Iterator[tuple[int, Key, Any]]:
        """Yield the latest unflushed record of each key found at open, oldest first."""
        records, self._replayed = self._replayed, []
        yield from records

    def append(self, records: list[tuple[int, Key, Any]]) -> None:
        """Write records; with fsync='always' return only once they are on disk."""
        if not records:
            return
        data = b""
        while True:
            with self._write_lock:
                if not data:
                    # Encoded first: a value the codec refuses raises before any byte is
                    # written. (The encoder is not thread-safe: it runs under this lock.)
                    encode = self._encoder.record
                    if len(records) == 1:
                        seq, key, value = records[0]
                        data, top = encode(seq, key, value), seq
                    else:
                        data = b"".join([encode(seq, key, value) for seq, key, value in records])
                        top = max(seq for seq, _, _ in records)
                if self._failed is not None or self._closed:
                    self._check_usable()
                active = self._active.segment
                end = active.size + len(data)
                if end <= self._active.capacity:
                    self._active.map[active.size : end] = data
                    active.size = end
                    active.records += len(records)
                    if top > active.max_seq:
                        active.max_seq = top
                        self._last_seq = max(self._last_seq, top)
                    self._written += len(data)
                    ticket = self._written
                    break
            # Full: rotate outside the write lock, so other writers wait for no disk I/O.
            self._rotate(len(fmt.MAGIC) + len(data), functools.partial(self._full, len(data)))
        if fault_hook is not None:
            fault_hook("append.written")
        if self.fsync == "always":
            self._sync(ticket)
        if fault_hook is not None:
            fault_hook("append.synced")

    def flushed(self, upto: int) -> None:
        """Every record at or below ``upto`` is in the source or superseded: record, compact.

        Returns once ``upto`` is durable (JournalError if it cannot be made so: the caller
        must not acknowledge its flush), then frees what it can; a failure to free space
        is logged and retried at the next call.
        """
        _fault("flushed")
        with self._compact_lock:
            if self._closed:
                raise ClosedError(f"journal {self.path} is closed")
            self._flushed = max(self._flushed, upto)
            upto = self._flushed
            self._write_meta(upto)

            def drained() -> bool:
                active = self._active.segment
                return self._usable() and active.records > 0 and active.max_seq <= upto

            self._drop_flushed(upto)  # first: on a full disk the rotation needs the space
            with self._write_lock:
                rotate = drained()
            if rotate:
                try:
                    self._rotate(0, drained)
                except JournalError as exc:
                    logger.warning(
                        "journal %s: rotation failed (%s); retried later", self.path, exc
                    )
                    return
                self._drop_flushed(upto)

    def park(self, records: list[tuple[int, Key, Any]]) -> None:
        """Durably make ``records`` the writes the source refused, replacing the last set.

        A restart replays them with the unflushed writes (unless a later write of the key
        replaced them), so the watermark may pass them without losing them.
        """
        path = self.path / _REJECTED
        with self._compact_lock:
            if self._closed:
                raise ClosedError(f"journal {self.path} is closed")
            try:
                if not records:
                    if self._parked_file:
                        path.unlink(missing_ok=True)
                        _fsync_dir(self.path)
                        self._parked_file = False
                    return
                body = b"".join(
                    fmt.encode_record(seq, *fmt.encode_payload(self._codec, key, value))
                    for seq, key, value in records
                )
                _replace_durably(path, fmt.REJECTED_MAGIC + body)
                self._parked_file = True
            except OSError as exc:
                raise JournalError(
                    f"journal {self.path}: cannot record the rejected writes ({exc.strerror})"
                ) from exc

    def close(self) -> None:
        """Sync what was written, stop the background thread and release the lock."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        with self._compact_lock, self._rotate_lock, self._write_lock, self._sync_lock:
            self._closed = True
            try:
                if self._failed is None:
                    self._seal_unsealed()
                    self._active.seal()  # fsyncs what was written, trims the zero tail
            except (OSError, JournalError) as exc:
                logger.error("journal %s: final sync failed: %s", self.path, exc)  # noqa: TRY400
            finally:
                for active, _ in self._unsealed:
                    active.release()  # after a failure: leave the files; reopen replays them
                self._unsealed.clear()
                self._active.release()
                self._release_open()

    # -- inspection helpers (tests, CLI) ---------------------------------------------

    def files(self) -> list[Path]:
        """The segment files now, oldest first."""
        return [path for _, path in _segment_paths(self.path)]

    @property
    def size(self) -> int:
        """Bytes in all segments."""
        with self._write_lock:
            return self._active.segment.size + sum(s.size for s in self._closed_segments)

    @property
    def failed(self) -> bool:
        """Whether a write or fsync failed: appends are refused until reopened."""
        return self._failed is not None

    # -- durability ------------------------------------------------------------------

    def _usable(self) -> bool:
        return self._failed is None and not self._closed

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"journal {self.path} is closed")
        if self._failed is not None:
            raise JournalError(
                f"journal {self.path} refused the write: an earlier write or fsync failed "
                "and the data on disk is unknown; reopen the cache to replay it"
            ) from self._failed

    def _fail(self, what: str, exc: OSError) -> JournalError:
        error = JournalError(
            f"journal {self.path}: {what} failed ({exc.strerror or exc}); the write is not "
            "acknowledged and the journal refuses writes until reopened"
        )
        if self._failed is None:
            self._failed = error
            logger.error("%s", error)
        return error

    def _sync(self, ticket: int) -> None:
        """Make every byte up to ``ticket`` durable; one fsync serves every waiting writer."""
        with self._sync_lock:
            if self._synced >= ticket:
                return
            self._check_usable()
            self._seal_unsealed()  # bytes below the target may sit in a rotated-out segment
            target = self._written  # complete writes only: sealed segments or this one
            try:
                os.fsync(self._active.fd)  # covers stores through the map: one page cache
            except OSError as exc:
                raise self._fail("fsync", exc) from exc
            self._synced = target

    def _full(self, size: int) -> bool:
        """Whether ``size`` more bytes do not fit in the active segment."""
        return self._active.segment.size + size > self._active.capacity

    def _rotate(self, need: int, still: Callable[[], bool]) -> None:
        """Start the next segment if ``still()`` holds; the old one is sealed later.

        The new segment is created (preallocated, fsynced) under a temporary name with no
        lock writers need; renaming it in and swapping it for the active one happen under
        the write lock, where no append is half done, so the old segment never ends in a
        torn record once a newer one exists. The old segment is fsynced and trimmed (and
        the directory fsynced) by the next sync or by the background thread; until then
        no sync may count its bytes as durable (``_seal_unsealed`` runs first).
        """
        with self._rotate_lock:
            with self._write_lock:
                self._check_usable()
                if not still():
                    return  # another thread rotated meanwhile
                index = self._active.segment.index + 1
            new = self._create_segment(index, max(self._segment_bytes, need))
            _fault("rotate.created")
            with self._write_lock, self._sync_lock:
                if not self._usable() or not still():
                    new.release()
                    new.segment.path.unlink(missing_ok=True)
                    self._check_usable()
                    return
                try:
                    self._install(new)
                except OSError as exc:
                    new.release()
                    new.segment.path.unlink(missing_ok=True)
                    raise JournalError(
                        f"cannot rename journal segment {new.segment.path} in: {exc.strerror}"
                    ) from exc
                _fault("rotate.renamed")
                old = self._active
                self._unsealed.append((old, self._written))
                self._closed_segments.append(old.segment)
                self._active = new
                self._highest_index = max(self._highest_index, index)
                self._maybe_want_compaction()
        self._wake.set()

    def _seal_unsealed(self) -> None:
        """Fsync renamed-in segments' directory, then fsync and trim rotated-out segments.

        ``_sync_lock`` held.
        """
        if self._dir_unsynced:
            try:
                _fsync_dir(self.path)
            except OSError as exc:
                raise self._fail("fsync", exc) from exc
            self._dir_unsynced = False
        while self._unsealed:
            old, upto = self._unsealed[0]
            try:
                old.seal()
            except OSError as exc:
                raise self._fail("fsync", exc) from exc
            finally:
                self._unsealed.pop(0)
            self._synced = max(self._synced, upto)

    # -- compaction ------------------------------------------------------------------

    def _write_meta(self, upto: int) -> None:
        """Make ``upto`` the durable flushed sequence; ``_compact_lock`` held."""
        if upto <= self._meta_flushed:
            return
        assert self._meta is not None
        try:
            self._meta.write(upto)
        except OSError as exc:
            raise JournalError(
                f"journal {self.path}: cannot make the flushed sequence durable ({exc.strerror})"
            ) from exc
        self._meta_flushed = upto

    def _drop_flushed(self, upto: int) -> None:
        """Delete the closed segments holding only records at or below ``upto``."""
        with self._write_lock:
            segments = [s for s in self._closed_segments if s.max_seq <= upto]
        if not segments:
            return
        try:
            _fault("compact.meta")
            for segment in segments:
                segment.path.unlink(missing_ok=True)
            _fsync_dir(self.path)
        except OSError as exc:
            logger.warning("journal %s: compaction failed (%s); retried later", self.path, exc)
            return
        with self._write_lock:
            gone = {id(s) for s in segments}
            self._closed_segments = [s for s in self._closed_segments if id(s) not in gone]

    def _maybe_want_compaction(self) -> None:
        """After a rotation (``_write_lock`` held): rewrite if unflushed history piles up."""
        live = [s for s in self._closed_segments if s.max_seq > self._flushed]
        live_bytes = sum(s.size for s in live)
        if len(live) >= 3 and live_bytes > 2 * self._compacted_bytes:
            self._compact_wanted = True

    def _compact(self) -> None:
        """Rewrite the closed segments to the latest unflushed record per key."""
        with self._compact_lock:
            if self._failed is not None or self._closed:
                return
            upto = self._flushed
            with self._write_lock:
                droppable = [s for s in self._closed_segments if s.max_seq <= upto]
                targets = [s for s in self._closed_segments if s.max_seq > upto]
            if droppable:
                self._drop_flushed(upto)
            if len(targets) < 2:
                return
            try:
                self._rewrite(targets, upto)
            except (OSError, JournalCorruptError) as exc:
                logger.warning("journal %s: rewrite failed (%s); retried later", self.path, exc)

    def _rewrite(self, targets: list[_Segment], upto: int) -> None:
        latest: dict[bytes, fmt.RawRecord] = {}
        for segment in targets:
            data = segment.path.read_bytes()
            scan = fmt.scan(data)
            if scan.problem is not None:
                raise JournalCorruptError(str(segment.path), scan.end, scan.problem)
            for record in scan.records:
                if record.seq > upto:
                    key = record.key_bytes()
                    seen = latest.get(key)
                    if seen is None or seen.seq < record.seq:
                        latest[key] = record
        keep = sorted(latest.values(), key=lambda r: r.seq)
        body = b"".join(fmt.encode_record(r.seq, r.kind, r.payload) for r in keep)
        self._write_meta(upto)  # records at or below upto are dropped: make that durable
        dest = targets[-1]
        _replace_durably(dest.path, fmt.MAGIC + body)
        _fault("compact.renamed")
        for segment in targets[:-1]:
            segment.path.unlink(missing_ok=True)
        _fsync_dir(self.path)
        before = sum(s.size for s in targets)
        with self._write_lock:
            gone = {id(s) for s in targets[:-1]}
            self._closed_segments = [s for s in self._closed_segments if id(s) not in gone]
            dest.size = len(fmt.MAGIC) + len(body)
            dest.records = len(keep)
            dest.max_seq = max((r.seq for r in keep), default=0)
            self._compacted_bytes = dest.size
        logger.info(
            "journal %s: rewrote %d segments, %d -> %d bytes",
            self.path,
            len(targets),
            before,
            dest.size,
        )

    def _maintain(self) -> None:
        """Background: seal rotated segments, the everysec fsync, rewrites when asked."""
        interval = self._sync_interval if self.fsync == "everysec" else None
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._unsealed:
                    with self._sync_lock:
                        if self._usable():
                            self._seal_unsealed()
                if self.fsync == "everysec" and self._synced < self._written:
                    self._sync(self._written)
            except (JournalError, ClosedError):
                pass  # logged by _fail; appends now refuse
            if self._compact_wanted:
                self._compact_wanted = False
                try:
                    self._compact()
                except Exception:
                    logger.exception("journal %s: compaction failed", self.path)


# -- read-only inspection (the CLI) ----------------------------------------------------


@dataclass(frozen=True)
class InspectedRecord:
    """One record as ``cachewise journal inspect`` shows it."""

    segment: str
    offset: int
    seq: int
    deleted: bool
    key: Any
    value: Any
    flushed: bool
    error: str | None = None
    rejected: bool = False
    """A write the source refused, parked in the ``rejected`` file (replayed at start-up)."""


@dataclass
class Inspection:
    """What a journal directory holds, read without taking its lock or changing it."""

    path: str
    flushed: int
    last_seq: int = 0
    segments: list[tuple[str, int]] = field(default_factory=list)
    records: list[InspectedRecord] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    meta_damaged: bool = False


def inspect_journal(path: str | os.PathLike[str], codec: Codec | None = None) -> Inspection:
    """Read a journal directory without changing it: records, flushed sequence, damage."""
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigurationError(f"{directory} is not a journal: not a directory")
    marks = (directory / _LOCK).exists() or (directory / _META).exists()
    if not marks and not _segment_paths(directory):
        # An opened journal always has its lock file; a crash may leave segments alone.
        raise ConfigurationError(
            f"{directory} is not a journal: no {_LOCK}, {_META} or NNN{_SUFFIX} file in it"
        )
    codec = codec or default_codec()
    try:
        flushed = _read_meta(directory)
        damaged_meta = False
    except JournalCorruptError:
        flushed, damaged_meta = 0, True
    report = Inspection(str(directory), flushed, flushed, meta_damaged=damaged_meta)
    paths = _segment_paths(directory)
    for position, (_, seg_path) in enumerate(paths):
        data = seg_path.read_bytes()
        scan = fmt.scan(data)
        report.segments.append((seg_path.name, len(data)))
        _inspect_records(report, seg_path.name, scan, codec, rejected=False)
        damage = _classify(seg_path, data, scan, last=position == len(paths) - 1)
        if damage is not None:
            report.damage.append(damage)
    rejected = directory / _REJECTED
    if rejected.exists():
        scan = fmt.scan(rejected.read_bytes(), fmt.REJECTED_MAGIC)
        _inspect_records(report, _REJECTED, scan, codec, rejected=True)
        if scan.problem is not None:
            report.damage.append(Damage(str(rejected), scan.end, scan.problem, torn_tail=False))
    return report


def _inspect_records(
    report: Inspection, name: str, scan: fmt.Scan, codec: Codec, *, rejected: bool
) -> None:
    for record in scan.records:
        report.last_seq = max(report.last_seq, record.seq)
        error = None
        try:
            key, value = fmt.decode_payload(codec, record.kind, record.payload)
        except CodecError as exc:
            key, value, error = None, None, str(exc)
        report.records.append(
            InspectedRecord(
                name,
                record.offset,
                record.seq,
                record.kind == fmt.DELETE,
                key,
                value,
                record.seq <= report.flushed and not rejected,
                error,
                rejected,
            )
        )
