"""The examples in docs/aggregates.md run (each python block, in a fresh namespace)."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "aggregates.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_aggregates_page_examples_run() -> None:
    blocks = BLOCK.findall(PAGE.read_text())
    assert blocks, "docs/aggregates.md has no python example"
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), {"__name__": "docs_example"})
