"""The write-back journal's on-disk format: records, segment headers, the meta file.

Pure bytes in, bytes out; the journal (``journal.py``) does the file I/O.

A segment file is ``MAGIC`` followed by records, then (while it is the active segment,
or after a crash) zeros up to its preallocated size. A record is::

    u32 length        of the payload
    u32 length ^ 0xFFFFFFFF
                      a second copy, so a damaged length is caught before it is trusted
    u32 crc32         of everything after this field (seq, kind, payload)
    u64 seq           the write's sequence number, increasing
    u8  kind          PUT or DELETE (the tombstone is a kind, never a value)
    payload           u32 key length, the key, then (PUT) the value; key and value
                      encoded by the project codec (exact SQL row types, no pickle)

All integers little-endian. The meta file holds the highest sequence known flushed
(everything at or below it is in the source or superseded), with its own CRC, in two
slots written alternately in place: a write torn by a crash leaves the other slot, and
an update needs no new disk block (it succeeds on a full disk). A file of one slot is
the older layout and still reads.

The rejected file holds the writes the source refused (parked keys): ``REJECTED_MAGIC``
then records in the segment format, replaced as a whole (temporary file and rename).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from cachewise import codecs
from cachewise._types import Key
from cachewise.codecs import Codec
from cachewise.errors import CodecError
from cachewise.writeback.dirty import TOMBSTONE

MAGIC: Final = b"CWJRNL01"
"""The first bytes of every segment (format version 1)."""

META_MAGIC: Final = b"CWJMETA1"

REJECTED_MAGIC: Final = b"CWJREJ01"
"""The first bytes of the rejected file (records in the segment format)."""

PUT: Final = 1
DELETE: Final = 2
_KINDS: Final = frozenset((PUT, DELETE))

HEADER: Final = struct.Struct("<IIIQB")
"""length, ~length, crc32, seq, kind."""

_CRC_FROM: Final = 12
"""The CRC covers the header from ``seq`` on, and the payload."""

_LENGTHS: Final = struct.Struct("<III")
_SEQ_KIND: Final = struct.Struct("<QB")
_KEY_LEN: Final = struct.Struct("<I")
_META: Final = struct.Struct("<8sQI")
MAX_PAYLOAD: Final = 1 << 30
"""The largest record payload (key and value encoded): ``append`` refuses a bigger write
with CodecError before acknowledging it, and a scan reads a bigger length as damage.
Both read this one constant, so what is acknowledged is always replayed."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as found in a segment: where it starts, its sequence, kind and payload."""

    offset: int
    seq: int
    kind: int
    payload: bytes

    @property
    def end(self) -> int:
        """The offset just past this record."""
        return self.offset + HEADER.size + len(self.payload)

    def key_bytes(self) -> bytes:
        """The encoded key: records of one key share it exactly (coalescing on compaction)."""
        (size,) = _KEY_LEN.unpack_from(self.payload)
        return self.payload[_KEY_LEN.size : _KEY_LEN.size + size]


@dataclass(frozen=True, slots=True)
class Scan:
    """What one pass over a segment found: the good records and where (and why) it stopped.

    ``problem`` is None when the segment ends cleanly after the last record; otherwise
    ``end`` is the offset of the first bad byte and ``problem`` says what is wrong there.
    """

    records: list[RawRecord]
    end: int
    problem: str | None
    padding: int = 0
    """Zero bytes after the last record (a preallocated segment's unused tail)."""


def encode_payload(codec: Codec, key: Key, value: Any) -> tuple[int, bytes]:
    """The kind and payload of a write of ``value`` (or TOMBSTONE) to ``key``."""
    key_bytes = codec.encode(key)
    if value is TOMBSTONE:
        return DELETE, check_size(_KEY_LEN.pack(len(key_bytes)) + key_bytes, key)
    payload = _KEY_LEN.pack(len(key_bytes)) + key_bytes + codec.encode(value, key)
    return PUT, check_size(payload, key)


def check_size(payload: bytes, key: Key) -> bytes:
    """``payload`` if a journal can hold it, else CodecError naming the key and the limit."""
    if len(payload) > MAX_PAYLOAD:
        raise CodecError(
            f"the write of {key!r:.80} encodes to {len(payload):,} bytes, over the journal's "
            f"record limit of {MAX_PAYLOAD:,} bytes"
        )
    return payload


def decode_payload(codec: Codec, kind: int, payload: bytes) -> tuple[Key, Any]:
    """The key and value (or TOMBSTONE) a record's payload holds; CodecError if it cannot."""
    if len(payload) < _KEY_LEN.size:
        raise CodecError("record payload shorter than its key length")
    (size,) = _KEY_LEN.unpack_from(payload)
    start = _KEY_LEN.size
    if start + size > len(payload):
        raise CodecError("record key runs past the payload")
    key = codec.decode(payload[start : start + size])
    if kind == DELETE:
        if start + size != len(payload):
            raise CodecError("a delete record carries a value")
        return key, TOMBSTONE
    return key, codec.decode(payload[start + size :], key)


def encode_record(seq: int, kind: int, payload: bytes) -> bytes:
    """The bytes of one record."""
    length = len(payload)
    tail = _SEQ_KIND.pack(seq, kind)
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return _LENGTHS.pack(length, length ^ 0xFFFFFFFF, crc) + tail + payload


class RecordEncoder:
    """Turns writes into record bytes; not thread-safe (the journal calls it under a lock).

    With the default codec it packs with one reusable ``msgpack.Packer`` (the codec's own
    options and type hook, so the bytes are exactly ``codec.encode``'s) and remembers the
    encodings of recent keys: the write path is microseconds and hot keys repeat.
    """

    _KEY_CACHE_SIZE: Final = 65_536

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._packer: Any = None
        if type(codec) is codecs.MsgpackCodec:
            self._packer = msgpack.Packer(
                default=codecs._default,
                use_bin_type=True,
                strict_types=True,
                unicode_errors="surrogatepass",
            )
        self._keys: dict[Key, bytes] = {}

    def _encode(self, value: Any, key: Key | None) -> bytes:
        if self._packer is None:
            return self._codec.encode(value, key)
        codecs.check_depth(value)  # the codec's own limit: what is journaled replays
        try:
            return self._packer.pack(value)  # type: ignore[no-any-return]
        except CodecError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode {type(value).__name__}: {exc}") from exc

    def record(self, seq: int, key: Key, value: Any) -> bytes:
        """The record of a write of ``value`` (or TOMBSTONE) to ``key``."""
        keys = self._keys
        key_part = keys.get(key)
        if key_part is None:
            encoded = self._encode(key, None)
            key_part = _KEY_LEN.pack(len(encoded)) + encoded
            if len(keys) >= self._KEY_CACHE_SIZE:
                keys.clear()
            keys[key] = key_part
        if value is TOMBSTONE:
            return encode_record(seq, DELETE, check_size(key_part, key))
        payload = key_part + self._encode(value, key)
        length = len(payload)
        if length > MAX_PAYLOAD:
            check_size(payload, key)
        tail = _SEQ_KIND.pack(seq, PUT)
        crc = zlib.crc32(payload, zlib.crc32(tail))
        return _LENGTHS.pack(length, length ^ 0xFFFFFFFF, crc) + tail + payload


def _record_at(data: bytes | memoryview, offset: int) -> tuple[RawRecord | None, str | None]:
    """The record starting at ``offset``, or None and what is wrong there."""
    if len(data) - offset < HEADER.size:
        return None, f"{len(data) - offset} bytes left, shorter than a record header"
    length, check, crc, seq, kind = HEADER.unpack_from(data, offset)
    if length ^ 0xFFFFFFFF != check or length > MAX_PAYLOAD:
        return None, "bad record length"
    end = offset + HEADER.size + length
    if end > len(data):
        return None, f"record of {length} bytes runs past the end of the file"
    body = bytes(data[offset + _CRC_FROM : end])
    if zlib.crc32(body) != crc:
        return None, "CRC mismatch"
    if kind not in _KINDS:
        return None, f"unknown record kind {kind}"
    return RawRecord(offset, seq, kind, body[HEADER.size - _CRC_FROM :]), None


def scan(data: bytes, magic: bytes = MAGIC) -> Scan:
    """Parse a whole segment: its header, then records until the end or the first bad one."""
    if not data.startswith(magic):
        return Scan([], 0, "not a cachewise journal segment (bad magic)")
    view = memoryview(data)
    records: list[RawRecord] = []
    offset = len(magic)
    size = len(data)
    while offset < size:
        record, problem = _record_at(view, offset)
        if record is None:
            if data.count(0, offset) == size - offset:
                # Segments are preallocated and written through a memory map: the records
                # end where the zeros start. Zeros *followed by data* are damage.
                return Scan(records, offset, None, size - offset)
            return Scan(records, offset, problem)
        records.append(record)
        offset = record.end
    return Scan(records, offset, None)


def valid_record_after(data: bytes, offset: int) -> int | None:
    """The offset of the first intact record starting after ``offset``, if any.

    Tells a torn tail (nothing intact follows the damage: a crash mid-append) from
    corruption in the middle (intact records follow: never skipped silently).
    """
    view = memoryview(data)
    # No header fits in the zero tail of a preallocated segment: stop where it begins.
    limit = len(data.rstrip(b"\x00"))
    for start in range(offset + 1, limit - 8 + 1):
        length, check = struct.unpack_from("<II", view, start)
        if length ^ 0xFFFFFFFF != check:  # cheap filter before the CRC
            continue
        record, _ = _record_at(view, start)
        if record is not None:
            return start
    return None


META_SLOT: Final = _META.size
"""Bytes of one meta slot; the meta file holds two."""


def encode_meta(flushed: int) -> bytes:
    """One meta slot's bytes: the highest sequence known flushed."""
    head = META_MAGIC + flushed.to_bytes(8, "little")
    return _META.pack(META_MAGIC, flushed, zlib.crc32(head))


def _decode_slot(data: bytes) -> int | None:
    magic, flushed, crc = _META.unpack(data)
    if magic != META_MAGIC or zlib.crc32(data[: _META.size - 4]) != crc:
        return None
    return int(flushed)


def decode_meta_slots(data: bytes) -> list[int | None] | None:
    """Each slot's flushed sequence (None where a slot is damaged); None if not a meta file."""
    if len(data) not in (META_SLOT, 2 * META_SLOT):
        return None
    return [_decode_slot(data[i : i + META_SLOT]) for i in range(0, len(data), META_SLOT)]


def decode_meta(data: bytes) -> int | None:
    """The flushed sequence a meta file holds (its best intact slot), or None if damaged."""
    slots = decode_meta_slots(data)
    intact = [slot for slot in slots or () if slot is not None]
    return max(intact) if intact else None
