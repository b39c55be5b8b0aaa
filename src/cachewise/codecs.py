"""Codecs: how values and keys cross a process boundary (Redis, the journal, bus messages).

A value codec turns a Python value into bytes and back, *exactly*: the default,
:class:`MsgpackCodec`, round-trips every type a SQL row holds (and the containers around
them) with its type intact, and refuses anything else with :class:`CodecError` instead
of guessing. Pickle is never the default: unpickling bytes read from a shared cache is
remote code execution for whoever can write to that cache, so :class:`SignedPickleCodec`
exists only behind an HMAC key and binds each value to the key it is stored under.

Both directions enforce one nesting limit, :data:`~cachewise._types.MAX_DEPTH` containers
(:func:`check_depth`): ``encode`` refuses a deeper value with :class:`CodecError` before
any state changes, and ``decode`` refuses deeper bytes the same way, before decoding a
nested tuple (which recurses in C) could exhaust the thread's stack. So hostile bytes in
Redis or a journal are a refused value, never a crash, and anything ``encode`` accepted
``decode`` accepts.

A key encoding (:func:`encode_key`) turns a cache key into a printable ASCII-safe text
that is injective *with the key's type* (``1`` and ``"1"`` differ, ``("a:b", "c")`` and
``("a", "b:c")`` differ), never contains a control character, whitespace, or the
``{``/``}`` Redis Cluster uses for hash tags, and can be decoded back
(:func:`decode_key`) by a process that receives it in an invalidation message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import pickle
import re
import struct
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, Protocol, runtime_checkable

import msgpack

from cachewise._types import MAX_DEPTH, Key, check_key
from cachewise.errors import CodecError, ConfigurationError, InvalidKeyError, SignatureError

__all__ = [
    "MAX_DEPTH",
    "Codec",
    "MsgpackCodec",
    "SignedPickleCodec",
    "check_depth",
    "decode_key",
    "default_codec",
    "encode_key",
]


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back.

    ``key`` is where the value is stored (a cache key, or the wire key a store uses).
    Plain codecs ignore it; signing codecs bind their signature to it so a value copied
    to another key fails verification. ``decode`` raises :class:`CodecError` (or its
    subclass :class:`SignatureError`) for bytes it cannot or must not decode; stores
    treat that as a miss.
    """

    def encode(self, value: Any, key: Key | None = None) -> bytes:
        """Return the bytes for ``value``; raise CodecError for a type it cannot encode."""
        ...

    def decode(self, data: bytes, key: Key | None = None) -> Any:
        """Return the value ``data`` encodes; raise CodecError if it cannot."""
        ...


# -- the nesting limit ---------------------------------------------------------------------

_CONTAINERS: Final = frozenset({list, tuple, dict, set, frozenset})


def check_depth(value: Any, what: str = "value") -> None:
    """Raise CodecError if ``value`` nests containers deeper than ``MAX_DEPTH``.

    Iterative (it never recurses, whatever the input), and exact types only: a container
    subclass is not walked (the default codec refuses it anyway). A dict's keys count too.
    A flat row costs one C-level scan of its values and keys.
    """
    containers = _CONTAINERS
    if type(value) not in containers:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CodecError(f"{what} nests containers deeper than {MAX_DEPTH} levels")
        for part in (item.values(), item.keys()) if type(item) is dict else (item,):
            if containers.isdisjoint(map(type, part)):
                continue
            for child in part:
                if type(child) in containers:
                    stack.append((child, depth + 1))


# -- the default codec: msgpack with ext types for the rest of a SQL row ------------------

# Extension type codes. They are part of the stored format: never renumber, only add.
_EXT_BIGINT: Final = 1  # int beyond msgpack's 64-bit range: two's complement, big-endian
_EXT_DECIMAL: Final = 2  # str(Decimal): exact, incl. sign of zero, exponent, NaN, sNaN
_EXT_DATETIME: Final = 3  # struct _DATETIME, then the zone (see _encode_tz)
_EXT_DATE: Final = 4  # struct _DATE
_EXT_TIME: Final = 5  # struct _TIME, then the zone
_EXT_TIMEDELTA: Final = 6  # struct _TIMEDELTA
_EXT_UUID: Final = 7  # the 16 bytes
_EXT_TUPLE: Final = 8  # the items, as a msgpack array

_ZONEINFO: type | None
try:  # zoneinfo is in the standard library from 3.9; tzdata may be absent
    from zoneinfo import ZoneInfo as _ZoneInfo

    _ZONEINFO = _ZoneInfo
except ImportError:  # pragma: no cover - stdlib on every supported Python
    _ZONEINFO = None


_DATETIME = struct.Struct(">HBBBBBIB")  # y, mo, d, h, mi, s, us, fold; then the zone
_TIME = struct.Struct(">BBBIB")  # h, mi, s, us, fold; then the zone
_DATE = struct.Struct(">HBB")
_TIMEDELTA = struct.Struct(">iII")  # days, seconds, microseconds (also a zone's offset)
_UTC: Final = dt.timezone.utc


def _encode_tz(tz: dt.tzinfo | None, probe: dt.datetime | None) -> bytes:
    """A zone as bytes: b"" (naive), U (UTC), Z+key (zoneinfo), O+offset or N+offset+name."""
    if tz is None:
        return b""
    if tz is _UTC:
        return b"U"
    if _ZONEINFO is not None and isinstance(tz, _ZONEINFO):
        zone_key: str | None = getattr(tz, "key", None)
        if zone_key is not None:
            return b"Z" + zone_key.encode("utf-8")
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        name: str | None = tz.tzname(None)
        if name == dt.timezone(offset).tzname(None):
            name = None  # the generated "UTC+01:00": rebuild it rather than freeze it
    else:
        # Any other tzinfo (pytz, dateutil, a ZoneInfo read from a file): its offset at
        # this instant, as a fixed-offset zone. Documented in docs/codecs.md.
        maybe = tz.utcoffset(probe)
        if maybe is None:
            raise CodecError(f"cannot encode tzinfo {type(tz).__name__}: it has no fixed offset")
        offset, name = maybe, tz.tzname(probe)
    packed = _TIMEDELTA.pack(offset.days, offset.seconds, offset.microseconds)
    if name is None:
        return b"O" + packed
    return b"N" + packed + name.encode("utf-8", "surrogatepass")


def _decode_tz(data: bytes) -> dt.tzinfo | None:
    if not data:
        return None
    kind = data[:1]
    if kind == b"U":
        return _UTC
    if kind == b"Z":
        if _ZONEINFO is None:  # pragma: no cover
            raise CodecError("a zoneinfo zone was stored but zoneinfo is unavailable")
        try:
            zone: dt.tzinfo = _ZONEINFO(data[1:].decode("utf-8"))
        except Exception as exc:
            raise CodecError("unknown time zone") from exc
        return zone
    if kind in (b"O", b"N"):
        days, seconds, micros = _TIMEDELTA.unpack_from(data, 1)
        offset = dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if kind == b"O":
            return dt.timezone(offset)
        return dt.timezone(offset, data[1 + _TIMEDELTA.size :].decode("utf-8", "surrogatepass"))
    raise CodecError(f"unknown time zone form {kind!r}")


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


class MsgpackCodec:
    """The default codec: msgpack, plus ext types for the rest of a SQL row.

    Round-trips exactly, type included: None, bool, int (any size), float (NaN, ±inf,
    -0.0: the IEEE bits), str (lone surrogates too), bytes, Decimal, datetime (naive or
    aware; ``fold`` kept), date, time, timedelta, UUID, list, tuple (as a tuple), dict
    (any keys this codec encodes, order kept). Zones: ``datetime.timezone`` offsets and
    names exactly; ``zoneinfo.ZoneInfo`` by its key; any other tzinfo as the fixed offset
    it has at that instant. Everything else (subclasses included: an ``IntEnum``, a
    ``defaultdict``) raises :class:`CodecError` rather than being silently changed.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "MsgpackCodec()"

    def encode(self, value: Any, key: Key | None = None) -> bytes:
        check_depth(value)
        try:
            return _pack(value)
        except CodecError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode {type(value).__name__}: {exc}") from exc

    def decode(self, data: bytes, key: Key | None = None) -> Any:
        try:
            value = _unpack(data)
        except CodecError:
            raise
        except Exception as exc:  # msgpack raises a zoo (ExtraData, FormatError, ...)
            raise CodecError(f"cannot decode {len(data)} bytes: {type(exc).__name__}") from exc
        check_depth(value, "decoded value")
        return value


def _ext(code: int, value: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, _pack(value))


def _encode_datetime(v: dt.datetime) -> msgpack.ExtType:
    head = _DATETIME.pack(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold)
    return msgpack.ExtType(_EXT_DATETIME, head + _encode_tz(v.tzinfo, v))


def _encode_time(v: dt.time) -> msgpack.ExtType:
    head = _TIME.pack(v.hour, v.minute, v.second, v.microsecond, v.fold)
    return msgpack.ExtType(_EXT_TIME, head + _encode_tz(v.tzinfo, None))


def _make_datetime(data: bytes) -> dt.datetime:
    y, mo, d, h, mi, s, us, fold = _DATETIME.unpack_from(data)
    tz = _decode_tz(data[_DATETIME.size :])
    return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=tz, fold=fold)


def _make_time(data: bytes) -> dt.time:
    h, mi, s, us, fold = _TIME.unpack_from(data)
    return dt.time(h, mi, s, us, tzinfo=_decode_tz(data[_TIME.size :]), fold=fold)


def _make_timedelta(data: bytes) -> dt.timedelta:
    days, seconds, micros = _TIMEDELTA.unpack(data)
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


# Exact types only: a subclass (IntEnum, a str subclass) is refused, not flattened.
_ENCODERS: Final[dict[type, Callable[[Any], msgpack.ExtType]]] = {
    int: lambda v: msgpack.ExtType(_EXT_BIGINT, _int_to_bytes(v)),  # beyond 64 bits
    tuple: lambda v: _ext(_EXT_TUPLE, list(v)),
    Decimal: lambda v: msgpack.ExtType(_EXT_DECIMAL, str(v).encode("ascii")),
    dt.datetime: _encode_datetime,
    dt.date: lambda v: msgpack.ExtType(_EXT_DATE, _DATE.pack(v.year, v.month, v.day)),
    dt.time: _encode_time,
    dt.timedelta: lambda v: msgpack.ExtType(
        _EXT_TIMEDELTA, _TIMEDELTA.pack(v.days, v.seconds, v.microseconds)
    ),
    uuid.UUID: lambda v: msgpack.ExtType(_EXT_UUID, v.bytes),
}

_nesting = threading.local()
"""Per thread: how deep the tuple being decoded is, and one Unpacker per depth."""

_POOLED_BYTES: Final = 64 << 10
"""A tuple's bytes up to this size are decoded by the thread's pooled Unpacker for its
depth; larger ones by a fresh one, so no pooled Unpacker keeps a large buffer alive."""


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(
        ext_hook=_ext_hook,
        raw=False,
        strict_map_key=False,
        unicode_errors="surrogatepass",
        max_buffer_size=(1 << 31) - 1,
    )


def _decode_tuple(data: bytes) -> tuple[Any, ...]:
    """Decode a tuple ext: its items are one more msgpack object (an array).

    Tuples nest by calling back into msgpack from its ext hook. ``unpackb`` keeps its
    whole context on the C stack (about 40 KB a level), so a few dozen levels would
    overflow a thread's stack; an ``Unpacker`` keeps it on the heap. So nested tuples
    are decoded by Unpackers pooled per thread and depth (as fast as ``unpackb``), and
    the depth is capped at ``MAX_DEPTH``: hostile bytes are refused, never a crash.
    """
    state = _nesting
    depth: int = getattr(state, "depth", 0)
    if depth >= MAX_DEPTH:
        raise CodecError(f"bytes nest tuples deeper than {MAX_DEPTH} levels")
    pool: list[msgpack.Unpacker] = state.__dict__.setdefault("pool", [])
    pooled = len(data) <= _POOLED_BYTES
    if not pooled:
        unpacker = _unpacker()
    elif depth < len(pool):
        unpacker = pool[depth]
    else:
        unpacker = _unpacker()
        pool.append(unpacker)
    state.depth = depth + 1
    try:
        start = unpacker.tell()
        unpacker.feed(data)
        items = unpacker.unpack()
        whole = unpacker.tell() - start == len(data)
    except BaseException:
        whole = False
        raise
    finally:
        state.depth = depth
        if pooled and not whole:  # its buffer may hold the rest of bad bytes: replace it
            pool[depth] = _unpacker()
    if not whole:
        raise CodecError("extra bytes after a tuple's items")
    return tuple(items)


_DECODERS: Final[dict[int, Callable[[bytes], Any]]] = {
    _EXT_BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
    _EXT_TUPLE: _decode_tuple,
    _EXT_DECIMAL: lambda data: Decimal(data.decode("ascii")),
    _EXT_DATETIME: _make_datetime,
    _EXT_DATE: lambda data: dt.date(*_DATE.unpack(data)),
    _EXT_TIME: _make_time,
    _EXT_TIMEDELTA: _make_timedelta,
    _EXT_UUID: lambda data: uuid.UUID(bytes=data),
}


def _default(value: Any) -> msgpack.ExtType:
    """Encode what msgpack cannot: called for every non-native (or subclassed) type."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        kind = type(value)
        raise CodecError(
            f"cannot encode {kind.__module__}.{kind.__qualname__}: the default codec keeps "
            "only SQL row types exactly (see docs/codecs.md)"
        )
    return encoder(value)


def _ext_hook(code: int, data: bytes) -> Any:
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise CodecError(f"unknown msgpack ext type {code}")
    return decoder(data)


def _pack(value: Any) -> bytes:
    # strict_types: tuples and subclasses reach _default instead of being coerced.
    return msgpack.packb(  # type: ignore[no-any-return]
        value,
        default=_default,
        use_bin_type=True,
        strict_types=True,
        unicode_errors="surrogatepass",
    )


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(
        data,
        ext_hook=_ext_hook,
        raw=False,
        strict_map_key=False,
        unicode_errors="surrogatepass",
    )


_DEFAULT: Final = MsgpackCodec()


def default_codec() -> Codec:
    """The codec cachewise uses when none is given (a shared :class:`MsgpackCodec`)."""
    return _DEFAULT


# -- signed pickle: opt-in, bound to the key ----------------------------------------------

_SIGNED_MAGIC: Final = b"cwP1"
_MAC_SIZE: Final = hashlib.sha256().digest_size
_MIN_SECRET: Final = 16


class SignedPickleCodec:
    """Pickle, signed with HMAC-SHA256 over (key, payload); opt-in, for trusted writers only.

    Encodes any picklable value. ``decode`` verifies the signature with
    :func:`hmac.compare_digest` *before* touching the payload and raises
    :class:`SignatureError` if it fails, so bytes planted by someone without the secret
    (a pickle bomb, a truncated value, a value copied from another key) are never
    unpickled. Every process sharing the cache needs the same ``secret`` (at least 16
    bytes). A key is required: it is what makes a value unmovable.
    """

    __slots__ = ("_protocol", "_secret")

    def __init__(self, secret: bytes, *, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if not isinstance(secret, bytes) or len(secret) < _MIN_SECRET:
            raise ConfigurationError(f"secret must be bytes of length >= {_MIN_SECRET}")
        if isinstance(protocol, bool) or not isinstance(protocol, int) or protocol < 2:
            raise ConfigurationError(f"protocol must be a pickle protocol >= 2, got {protocol!r}")
        self._secret = secret
        self._protocol = min(protocol, pickle.HIGHEST_PROTOCOL)

    def __repr__(self) -> str:
        return f"SignedPickleCodec(secret=<{len(self._secret)} bytes>, protocol={self._protocol})"

    def _mac(self, key: Key | None, payload: bytes) -> bytes:
        if key is None:
            raise CodecError("SignedPickleCodec needs the key the value is stored under")
        bound = encode_key(key).encode("utf-8")
        mac = hmac.new(self._secret, len(bound).to_bytes(8, "big"), hashlib.sha256)
        mac.update(bound)
        mac.update(payload)
        return mac.digest()

    def encode(self, value: Any, key: Key | None = None) -> bytes:
        check_depth(value)
        try:
            payload = pickle.dumps(value, protocol=self._protocol)
        except Exception as exc:  # PicklingError, TypeError, AttributeError, ...
            raise CodecError(f"cannot pickle {type(value).__name__}") from exc
        return _SIGNED_MAGIC + self._mac(key, payload) + payload

    def decode(self, data: bytes, key: Key | None = None) -> Any:
        head = len(_SIGNED_MAGIC)
        if len(data) < head + _MAC_SIZE or not data.startswith(_SIGNED_MAGIC):
            raise SignatureError("not a signed value")
        mac, payload = data[head : head + _MAC_SIZE], data[head + _MAC_SIZE :]
        if not hmac.compare_digest(mac, self._mac(key, payload)):
            raise SignatureError("signature mismatch: value rejected, not unpickled")
        try:
            value = pickle.loads(payload)  # noqa: S301 - authenticated by the HMAC above
        except Exception as exc:
            raise CodecError("signed value could not be unpickled") from exc
        check_depth(value, "unpickled value")
        return value


# -- key encoding -------------------------------------------------------------------------

# Printable ASCII that may appear raw: everything from ! to ~ except the escape char %,
# the tuple syntax ( ) , and the Redis Cluster hash-tag braces { }.
_UNSAFE_ASCII: Final = re.compile(r"[^\x21-\x24\x26\x27\x2a\x2b\x2d-\x7a\x7c\x7e]")
_RAW_TUPLE_CHARS: Final = frozenset("(),")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x80:
        return ch if _UNSAFE_ASCII.match(ch) is None else f"%{code:02X}"
    if ch.isprintable():  # letters, marks, symbols in any script: readable on the wire
        return ch
    # Control, format (bidi overrides, zero-width), separators, surrogates, unassigned.
    if code < 0x100:
        return f"%{code:02X}"
    if code < 0x10000:
        return f"%u{code:04X}"
    return f"%U{code:06X}"


def _escape_str(text: str) -> str:
    if _UNSAFE_ASCII.search(text) is None:  # the common case: one C-level scan
        return text
    return "".join(map(_escape_char, text))


def _escape_bytes(data: bytes) -> str:
    text = data.decode("latin-1")
    if _UNSAFE_ASCII.search(text) is None:
        return text
    return "".join(
        ch if ord(ch) < 0x80 and _UNSAFE_ASCII.match(ch) is None else f"%{ord(ch):02X}"
        for ch in text
    )


def encode_key(key: Key) -> str:
    """The injective, typed, wire-safe text of a cache key.

    ``i<decimal>`` for an int, ``s<text>`` for a str, ``b<bytes>`` for bytes, and
    ``t(<item>,<item>)`` for a tuple; in text and bytes, ``%``, ``(``, ``)``, ``,``,
    ``{``, ``}``, space, control and other non-printable characters are escaped as
    ``%XX``, ``%uXXXX`` or ``%UXXXXXX``. Raises InvalidKeyError for an unsupported key.
    """
    kind = type(key)
    if kind is str:
        return "s" + _escape_str(key)  # type: ignore[arg-type]
    if kind is int:
        return "i" + str(key)
    if kind is bytes:
        return "b" + _escape_bytes(key)  # type: ignore[arg-type]
    if kind is tuple:
        return _encode_tuple(key, 1)  # type: ignore[arg-type]
    check_key(key)  # raises InvalidKeyError with the standard message
    raise InvalidKeyError(f"unsupported key {key!r}")  # pragma: no cover


def _encode_tuple(key: tuple[Key, ...], depth: int) -> str:
    # Recursion bounded by MAX_DEPTH; a part of a bad type fails in encode_key.
    if depth > MAX_DEPTH:
        raise InvalidKeyError(f"key nests tuples deeper than {MAX_DEPTH} levels")
    parts = [
        _encode_tuple(part, depth + 1) if type(part) is tuple else encode_key(part) for part in key
    ]
    return "t(" + ",".join(parts) + ")"


_HEX_WIDTH: Final = {"u": 4, "U": 6}


def _unescape(text: str, start: int, end: int, as_bytes: bool) -> tuple[str | bytes, int]:
    """Decode an escaped atom from ``start``; stop at a raw ``,``/``)`` or ``end``."""
    out: list[str] = []
    i = start
    while i < end:
        ch = text[i]
        if ch in _RAW_TUPLE_CHARS:
            break
        if ch == "%":
            width = _HEX_WIDTH.get(text[i + 1 : i + 2], 2)
            first = i + (1 if width == 2 else 2)
            digits = text[first : first + width]
            if len(digits) != width or not all(c in "0123456789ABCDEF" for c in digits):
                raise InvalidKeyError(f"bad escape at offset {i} in encoded key")
            out.append(chr(int(digits, 16)))
            i = first + width
        else:
            out.append(ch)
            i += 1
    atom = "".join(out)
    if as_bytes:
        try:
            return atom.encode("latin-1"), i
        except UnicodeEncodeError as exc:
            raise InvalidKeyError("bytes key holds a character above 0xFF") from exc
    return atom, i


def _decode_at(text: str, i: int, end: int, depth: int = 0) -> tuple[Key, int]:
    tag = text[i : i + 1]
    if tag == "i":
        j = i + 1
        while j < end and text[j] not in _RAW_TUPLE_CHARS:
            j += 1
        digits = text[i + 1 : j]
        if not re.fullmatch(r"-?(0|[1-9][0-9]*)", digits):
            raise InvalidKeyError("bad int in encoded key")
        return int(digits), j
    if tag in ("s", "b"):
        atom, j = _unescape(text, i + 1, end, as_bytes=tag == "b")
        return atom, j
    if tag == "t" and text[i + 1 : i + 2] == "(":
        if depth >= MAX_DEPTH:
            raise InvalidKeyError(f"encoded key nests tuples deeper than {MAX_DEPTH} levels")
        items: list[Key] = []
        j = i + 2
        if text[j : j + 1] == ")":
            return (), j + 1
        while True:
            item, j = _decode_at(text, j, end, depth + 1)
            items.append(item)
            sep = text[j : j + 1]
            if sep == ")":
                return tuple(items), j + 1
            if sep != ",":
                raise InvalidKeyError("unterminated tuple in encoded key")
            j += 1
    raise InvalidKeyError(f"bad tag {tag!r} in encoded key")


def decode_key(text: str) -> Key:
    """The cache key :func:`encode_key` produced ``text`` from (InvalidKeyError if none)."""
    key, end = _decode_at(text, 0, len(text))
    if end != len(text):
        raise InvalidKeyError("trailing characters in encoded key")
    return key
