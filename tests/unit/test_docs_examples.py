"""Every ```python block of README.md and docs/ runs as is, in an empty directory.

A block is what a reader copies into a script: it runs in a fresh namespace and a fresh
empty working directory. Two marks on a block's first line change that:

- ``# fragment: why`` — not runnable alone (a protocol listing, a deployment that
  needs your servers); it is compiled, so it is still valid Python;
- ``# continued`` — the next step of the block above: it runs in that block's
  namespace and directory.
"""

from __future__ import annotations

import gc
import os
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def _id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _end_of_script(namespace: dict[str, object]) -> None:
    """What the end of the reader's script does: its objects go, unclosed ones too.

    An example may leave an engine open as a short script does, for the process's exit to
    close; Python 3.13 warns (ResourceWarning) when such a SQLite connection is collected.
    """
    namespace.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=_id)
def test_examples_run_in_an_empty_directory(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks(page)):
        first = block.split("\n", 1)[0].strip().lower()
        code = compile(block, f"{_id(page)} block {number + 1}", "exec")
        if first.startswith("# fragment"):
            continue
        if not first.startswith("# continued"):
            _end_of_script(namespace)
            workdir = tmp_path / f"block{number + 1}"
            workdir.mkdir()
            monkeypatch.chdir(workdir)
            namespace = {"__name__": "docs_example"}
        exec(code, namespace)
    _end_of_script(namespace)
    monkeypatch.chdir(tmp_path)


def test_every_page_with_python_is_checked() -> None:
    # The README and the pages the examples were first written for are among them.
    checked = {_id(p) for p in PAGES if blocks(p)}
    assert {"README.md", "docs/stores.md", "docs/sources.md", "docs/pooling.md"} <= checked


def test_a_fragment_is_marked_with_its_reason() -> None:
    for page in PAGES:
        for block in blocks(page):
            first = block.split("\n", 1)[0].strip()
            if first.lower().startswith("# fragment"):
                assert len(first) > len("# fragment: "), f"{_id(page)}: say why: {first}"


def test_readme_block_leaves_only_its_own_files(tmp_path: Path) -> None:
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    before = os.getcwd()
    os.chdir(workdir)
    namespace: dict[str, object] = {"__name__": "x"}
    try:
        exec(compile(blocks(ROOT / "README.md")[0], "README.md", "exec"), namespace)
    finally:
        _end_of_script(namespace)
        os.chdir(before)
    assert sorted(p.name for p in workdir.iterdir()) == ["shop.db", "shop.journal"]
