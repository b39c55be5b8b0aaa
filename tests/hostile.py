"""Hostile bytes for decoders, and a child process to decode them in.

A decoder that recurses in C can exhaust the stack and segfault: run such a decode in a
child process, so a crash is a failed test, not a dead test run.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_TUPLE_EXT = 8  # codecs._EXT_TUPLE: part of the stored format


def _ext(code: int, payload: bytes) -> bytes:
    """A msgpack ext of ``code`` with the smallest header for ``payload``."""
    size = len(payload)
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if size in fixed:
        return bytes([fixed[size], code]) + payload
    if size < 1 << 8:
        return bytes([0xC7, size, code]) + payload
    if size < 1 << 16:
        return b"\xc8" + struct.pack(">H", size) + bytes([code]) + payload
    return b"\xc9" + struct.pack(">I", size) + bytes([code]) + payload


def nested_tuple_bytes(budget: int) -> tuple[bytes, int]:
    """As many tuple exts nested in one another as fit in ``budget`` bytes; and how many.

    Each level is only an ext header around the level below (no array around it), the
    densest form the default codec's decoder accepts: 700 bytes hold 196 levels, which
    crashed every reader before the depth limit.
    """
    data, levels = b"\x91\x01", 0  # [1]
    while True:
        wrapped = _ext(_TUPLE_EXT, data)
        if len(wrapped) > budget:
            return data, levels
        data, levels = wrapped, levels + 1


def nested_list_bytes(levels: int) -> bytes:
    """``levels`` msgpack arrays nested in one another (decoded by msgpack without recursion)."""
    return b"\x91" * levels + b"\x01"


def run_child(code: str, *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this checkout importable.

    Fails the test (with the child's output) if the child died from a signal: a
    segfault must be a failure, never a skip or a dead test run.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT / "src"), str(_ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert done.returncode >= 0, (
        f"the child died from signal {-done.returncode}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done
