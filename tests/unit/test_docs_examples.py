"""The examples in the docs run: each ```python block of these pages, in a fresh namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = [
    "strategies.md",
    "stores.md",
    "write-back.md",
    *sorted(p.name for p in (DOCS / "strategies").glob("*.md")),
]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _page(name: str) -> Path:
    path = DOCS / name
    return path if path.exists() else DOCS / "strategies" / name


@pytest.mark.parametrize("name", PAGES)
def test_examples_run(name: str) -> None:
    blocks = BLOCK.findall(_page(name).read_text())
    assert blocks, f"{name} has no python example"
    for block in blocks:
        exec(compile(block, str(_page(name)), "exec"), {"__name__": "docs_example"})
