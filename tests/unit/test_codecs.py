"""Codecs: exact value round-trips, refusals, signed pickle, injective key encoding."""

from __future__ import annotations

import collections
import datetime as dt
import enum
import pickle
import struct
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachewise._types import MAX_DEPTH, check_key
from cachewise.codecs import (
    Codec,
    MsgpackCodec,
    SignedPickleCodec,
    check_depth,
    decode_key,
    default_codec,
    encode_key,
)
from cachewise.errors import CodecError, ConfigurationError, InvalidKeyError, SignatureError
from tests.hostile import nested_list_bytes, nested_tuple_bytes, run_child

CODEC = MsgpackCodec()
SECRET = b"0123456789abcdef-test-secret"


def same(a: Any, b: Any) -> bool:  # noqa: PLR0911
    """Equal *and* of the same type, recursively; floats by their bits, zones by name."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, (dt.datetime, dt.time)):
        fields: tuple[str, ...] = ("hour", "minute", "second", "microsecond", "fold")
        if isinstance(a, dt.datetime):
            fields = ("year", "month", "day", *fields)
        return (
            all(getattr(a, f) == getattr(b, f) for f in fields)
            and a.tzinfo == b.tzinfo
            and a.utcoffset() == b.utcoffset()
            and a.tzname() == b.tzname()
        )
    return bool(a == b)


# -- strategies ---------------------------------------------------------------------------

ALL_CHARS = st.characters(blacklist_categories=())  # surrogates and controls included
fixed_zones = st.builds(
    dt.timezone,
    st.timedeltas(
        min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23, minutes=59)
    ),
) | st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-12), max_value=dt.timedelta(hours=12)),
    # An explicit alphabet: plain st.text() makes Hypothesis work out, on its first draw
    # in a fresh checkout, which of the 1.1M code points UTF-8 encodes (seconds under
    # load), and that one slow draw failed the "too slow" health check.
    st.text(alphabet=ALL_CHARS, max_size=8),
)
zones = st.none() | st.just(dt.timezone.utc) | fixed_zones | st.timezones()

hashable_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=ALL_CHARS)
    | st.binary()
    | st.decimals(allow_nan=False, allow_infinity=True)
    | st.datetimes(timezones=zones, allow_imaginary=True)
    | st.dates()
    | st.times(timezones=zones)
    | st.timedeltas()
    | st.uuids()
)

values = st.recursive(
    hashable_leaves | st.decimals(allow_nan=True),
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(hashable_leaves, children, max_size=5)
    ),
    max_leaves=20,
)

keys = st.recursive(
    st.integers()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.text(alphabet=ALL_CHARS)
    | st.binary(),
    lambda children: st.lists(children, max_size=4).map(tuple),
    max_leaves=10,
)


# -- MsgpackCodec -------------------------------------------------------------------------


@settings(max_examples=400)
@given(values)
def test_msgpack_round_trips_exactly(value: Any) -> None:
    assert same(CODEC.decode(CODEC.encode(value)), value)


@given(values, st.data())
def test_any_truncated_value_is_a_codec_error(value: Any, data: st.DataObject) -> None:
    encoded = CODEC.encode(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(CodecError):
        CODEC.decode(encoded[:cut])


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        2**1000,
        -(2**1000),
        float("nan"),
        float("-inf"),
        -0.0,
        Decimal("-0.00"),
        Decimal("sNaN"),
        Decimal("1E+400"),
        dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")),
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=-1, microseconds=7))),
        dt.datetime(2024, 1, 1, 12, 0, 0, 123456),
        dt.time(23, 59, 59, 999999, tzinfo=dt.timezone.utc),
        dt.time(1, 2, tzinfo=ZoneInfo("America/New_York")),
        dt.date(1, 1, 1),
        dt.timedelta(days=-3, microseconds=1),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        (1, (2, [3, (4,)])),
        (),
        {1: "a", "1": "b", (1, 2): [b"x"], None: 0, dt.date(2024, 1, 1): Decimal("1.10")},
        "\ud800 lone surrogate",
    ],
    ids=repr,
)
def test_msgpack_round_trips_edge_values(value: Any) -> None:
    assert same(CODEC.decode(CODEC.encode(value)), value)


# -- one nesting limit, on encode and on decode ------------------------------------------


def _nest(kind: str, levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value} if kind == "dict" else [value] if kind == "list" else (value,)
    return value


CODECS = [CODEC, SignedPickleCodec(SECRET)]


@pytest.mark.parametrize("codec", CODECS, ids=["msgpack", "signed-pickle"])
@pytest.mark.parametrize("kind", ["tuple", "list", "dict"])
def test_a_value_nested_to_the_limit_round_trips(codec: Codec, kind: str) -> None:
    value = _nest(kind, MAX_DEPTH)
    assert same(codec.decode(codec.encode(value, key="k"), key="k"), value)


@pytest.mark.parametrize("codec", CODECS, ids=["msgpack", "signed-pickle"])
@pytest.mark.parametrize("kind", ["tuple", "list", "dict"])
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 195, 250, 5_000])
def test_a_value_nested_past_the_limit_is_refused_at_encode(
    codec: Codec, kind: str, levels: int
) -> None:
    with pytest.raises(CodecError, match=f"deeper than {MAX_DEPTH}"):
        codec.encode(_nest(kind, levels), key="k")


def test_depth_counts_every_container_and_dict_keys() -> None:
    mixed: Any = 1
    for level in range(MAX_DEPTH):
        mixed = [mixed] if level % 3 == 0 else (mixed,) if level % 3 == 1 else {"k": mixed}
    check_depth(mixed)
    with pytest.raises(CodecError):
        check_depth({"k": mixed})
    with pytest.raises(CodecError):
        check_depth({_nest("tuple", MAX_DEPTH): 1})  # the key is the deep part
    check_depth({_nest("tuple", MAX_DEPTH - 1): 1})


def test_hostile_nested_tuples_are_a_codec_error_not_a_crash() -> None:
    data, levels = nested_tuple_bytes(700)
    assert len(data) <= 700
    assert levels > 190  # what crashed every reader before the limit
    done = run_child(
        f"""
        import threading
        from cachewise.codecs import MsgpackCodec
        from cachewise.errors import CodecError

        def decode():
            try:
                MsgpackCodec().decode({data!r})
            except CodecError as exc:
                print("refused:", exc)

        decode()
        threading.stack_size(1 << 20)  # a thread: less stack than the main one
        worker = threading.Thread(target=decode)
        worker.start()
        worker.join()
        """
    )
    assert done.stdout.count("refused:") == 2, done.stderr


def test_hostile_nested_lists_are_a_codec_error() -> None:
    with pytest.raises(CodecError):
        CODEC.decode(nested_list_bytes(MAX_DEPTH + 1))
    with pytest.raises(CodecError):
        CODEC.decode(nested_list_bytes(5_000))
    assert same(CODEC.decode(nested_list_bytes(MAX_DEPTH)), _nest("list", MAX_DEPTH))


def test_a_signed_value_nested_past_the_limit_is_refused_at_decode() -> None:
    """Even from a writer holding the secret: one limit for every codec."""
    codec = SignedPickleCodec(SECRET)
    payload = pickle.dumps(_nest("list", MAX_DEPTH + 1))
    signed = b"cwP1" + codec._mac("k", payload) + payload
    with pytest.raises(CodecError, match="deeper than"):
        codec.decode(signed, key="k")


def test_a_key_nested_past_the_limit_is_an_invalid_key_error() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH):
        deep = (deep,)
    assert decode_key(encode_key(deep)) == deep
    assert check_key(deep) is deep
    deeper: Any = deep
    for _ in range(5_000 - MAX_DEPTH):
        deeper = (deeper,)
    with pytest.raises(InvalidKeyError, match="deeper than"):
        check_key(deeper)
    with pytest.raises(InvalidKeyError, match="deeper than"):
        encode_key(deeper)
    with pytest.raises(InvalidKeyError, match="deeper than"):
        decode_key("t(" * 5_000 + "i1" + ")" * 5_000)
    with pytest.raises(InvalidKeyError, match="deeper than"):
        decode_key("t(" + encode_key(deep) + ")")  # one level past the limit


def test_tuple_stays_a_tuple_and_list_a_list() -> None:
    out = CODEC.decode(CODEC.encode({"t": (1, 2), "l": [1, 2]}))
    assert type(out["t"]) is tuple
    assert type(out["l"]) is list


def test_zoneinfo_zone_is_kept_by_name() -> None:
    paris = ZoneInfo("Europe/Paris")
    out = CODEC.decode(CODEC.encode(dt.datetime(2024, 7, 1, 12, tzinfo=paris)))
    assert out.tzinfo is paris


class _OtherTz(dt.tzinfo):
    def utcoffset(self, _: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=3)

    def tzname(self, _: dt.datetime | None) -> str:
        return "X3"

    def dst(self, _: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)


def test_other_tzinfo_becomes_its_fixed_offset() -> None:
    value = dt.datetime(2024, 1, 1, 8, tzinfo=_OtherTz())
    out = CODEC.decode(CODEC.encode(value))
    assert out == value
    assert out.utcoffset() == dt.timedelta(hours=3)
    assert out.tzname() == "X3"
    assert isinstance(out.tzinfo, dt.timezone)


class _Color(enum.IntEnum):
    RED = 1


class _MyFloat(float):
    pass


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        frozenset(),
        _Color.RED,
        _MyFloat(1.0),
        collections.defaultdict(list),
        [1, object()],
        {"k": {2, 3}},
        1 + 2j,
    ],
    ids=lambda v: type(v).__name__,
)
def test_unsupported_types_raise_codec_error(value: Any) -> None:
    with pytest.raises(CodecError):
        CODEC.encode(value)


def test_bytes_like_values_come_back_as_bytes() -> None:
    # msgpack writes any buffer as bin; documented in docs/codecs.md.
    assert same(CODEC.decode(CODEC.encode([bytearray(b"x"), memoryview(b"y")])), [b"x", b"y"])


def test_unknown_ext_type_is_a_codec_error() -> None:
    import msgpack

    with pytest.raises(CodecError, match="ext type 99"):
        CODEC.decode(msgpack.packb(msgpack.ExtType(99, b"x")))


class _Evil:
    ran: list[int] = []  # noqa: RUF012

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_Evil.ran.append, (1,))


def test_msgpack_never_unpickles_a_planted_pickle() -> None:
    _Evil.ran.clear()
    planted = pickle.dumps(_Evil())
    with pytest.raises(CodecError):
        CODEC.decode(planted)
    assert _Evil.ran == []


def test_default_codec_is_msgpack_and_satisfies_the_protocol() -> None:
    assert isinstance(default_codec(), MsgpackCodec)
    assert isinstance(default_codec(), Codec)
    assert isinstance(SignedPickleCodec(SECRET), Codec)


# -- SignedPickleCodec --------------------------------------------------------------------


class _Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_signed_pickle_round_trips_any_picklable_value() -> None:
    codec = SignedPickleCodec(SECRET)
    assert codec.decode(codec.encode(_Point(3), key="k"), key="k") == _Point(3)


def test_signed_value_moved_to_another_key_is_rejected_and_not_unpickled() -> None:
    _Evil.ran.clear()
    codec = SignedPickleCodec(SECRET)
    data = codec.encode(_Evil(), key="a")  # signed by a holder of the secret, for key "a"
    with pytest.raises(SignatureError):
        codec.decode(data, key="b")
    with pytest.raises(SignatureError):
        codec.decode(data, key=("a",))  # same text, different type: different key
    assert _Evil.ran == []


def test_signed_pickle_rejects_unsigned_tampered_or_foreign_bytes() -> None:
    _Evil.ran.clear()
    codec = SignedPickleCodec(SECRET)
    good = codec.encode({"v": 1}, key="k")
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    other_secret = SignedPickleCodec(b"another-secret-of-16+bytes").encode(_Evil(), key="k")
    for data in (pickle.dumps(_Evil()), good[:10], good[:-3], tampered, other_secret, b""):
        with pytest.raises(SignatureError):
            codec.decode(data, key="k")
    assert _Evil.ran == []


def test_signed_pickle_needs_a_key_and_a_long_secret() -> None:
    codec = SignedPickleCodec(SECRET)
    with pytest.raises(CodecError):
        codec.encode(1)
    with pytest.raises(ConfigurationError):
        SignedPickleCodec(b"short")
    with pytest.raises(ConfigurationError):
        SignedPickleCodec("a str secret of enough length")  # type: ignore[arg-type]


def test_signed_pickle_repr_hides_the_secret() -> None:
    text = repr(SignedPickleCodec(SECRET))
    assert SECRET.decode() not in text
    assert "28 bytes" in text


def test_unpicklable_value_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        SignedPickleCodec(SECRET).encode(lambda: 1, key="k")


# -- key encoding -------------------------------------------------------------------------


def same_key(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(same_key(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def wire_safe(text: str) -> bool:
    return all(ch.isprintable() and not ch.isspace() and ch not in "{}" for ch in text)


@settings(max_examples=500)
@given(keys)
def test_key_encoding_decodes_back_exactly_so_it_is_injective(key: Any) -> None:
    encoded = encode_key(key)
    assert same_key(decode_key(encoded), key)
    assert wire_safe(encoded)
    encoded.encode("utf-8")  # never a lone surrogate on the wire


@settings(max_examples=500)
@given(keys, keys)
def test_distinct_keys_never_share_an_encoding(a: Any, b: Any) -> None:
    assert (encode_key(a) == encode_key(b)) == same_key(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, "1"),
        ("1", b"1"),
        (("a:b", "c"), ("a", "b:c")),
        (("a,b",), ("a", "b")),
        (("a)",), ("a",)),
        ((), ((),)),
        ("", b""),
        ((1, 2), "t(i1,i2)"),
        ("a%41", "aA"),
        ("a\x00", "a"),
        (-1, "-1"),
    ],
)
def test_known_lookalikes_encode_differently(a: Any, b: Any) -> None:
    assert encode_key(a) != encode_key(b)


def test_control_and_layout_characters_are_escaped() -> None:
    encoded = encode_key(("a b\n\r\x00\x7f{}%", b"\x00\xff", "\u202e\u200b\x85"))
    assert wire_safe(encoded)
    assert encoded == "t(sa%20b%0A%0D%00%7F%7B%7D%25,b%00%FF,s%u202E%u200B%85)"


def test_printable_text_stays_readable() -> None:
    assert encode_key("user:42") == "suser:42"
    assert encode_key("café") == "scafé"
    assert encode_key(42) == "i42"
    assert encode_key(("orders", 7)) == "t(sorders,i7)"


@pytest.mark.parametrize("bad", [True, 1.0, None, [1], (1, None), {"a": 1}])
def test_unsupported_keys_raise_invalid_key_error(bad: Any) -> None:
    with pytest.raises(InvalidKeyError):
        encode_key(bad)


@pytest.mark.parametrize(
    "text", ["", "x1", "i", "i01", "i1a", "s%G0", "s%u12", "t(i1", "t(i1,", "si1)", "b%u0100"]
)
def test_malformed_encodings_are_refused(text: str) -> None:
    with pytest.raises(InvalidKeyError):
        decode_key(text)


def test_huge_int_key_round_trips() -> None:
    assert decode_key(encode_key(-(10**50))) == -(10**50)
