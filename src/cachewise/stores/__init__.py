"""Stores: where cached values live (memory, Redis, memory in front of Redis)."""

from cachewise.stores.base import EvictionAware, Store
from cachewise.stores.memory import MemoryStore

__all__ = ["EvictionAware", "MemoryStore", "Store"]
