"""Sources: the authoritative data source behind a cache (a dict, a SQL table)."""

from cachewise.sources.base import Source, ValidatingSource
from cachewise.sources.mapping import MappingSource
from cachewise.sources.sql import SQLSource

__all__ = ["MappingSource", "SQLSource", "Source", "ValidatingSource"]
