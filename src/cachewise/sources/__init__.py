"""Sources: the authoritative data source behind a cache (a dict, a SQL table)."""

from cachewise.sources.base import Source
from cachewise.sources.mapping import MappingSource

__all__ = ["MappingSource", "Source"]
