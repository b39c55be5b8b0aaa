"""Where the optional C accelerator is found: ``cachewise._speedups``, unless turned off.

``CACHEWISE_PURE_PYTHON=1`` (read when a store or cache is built) keeps every path in
pure Python, as on an install without a compiler; both paths are tested equally.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def speedups() -> ModuleType | None:
    """The C accelerator module, or None when it is not built or turned off."""
    if os.environ.get("CACHEWISE_PURE_PYTHON") == "1":
        return None
    try:
        return importlib.import_module("cachewise._speedups")
    except ImportError:  # installed without a compiler: pure Python serves
        return None
