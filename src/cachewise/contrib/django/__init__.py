"""cachewise in Django: a cache backend (``CacheBackend``), a Source over a model (``ModelSource``).

``pip install 'cachewise[django]'``; then in settings::

    CACHES = {"default": {"BACKEND": "cachewise.contrib.django.CacheBackend",
                          "LOCATION": "redis://127.0.0.1:6379/0",
                          "OPTIONS": {"tiered": True}}}

See docs/django.md.
"""

from __future__ import annotations

from cachewise.contrib.django.backend import CacheBackend, UnpicklableValueError
from cachewise.contrib.django.source import ModelSource

__all__ = ["CacheBackend", "ModelSource", "UnpicklableValueError"]
