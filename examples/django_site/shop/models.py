"""A product table and a page-view counter table (the workshop's cases 1 and 6)."""

from __future__ import annotations

from django.db import models


class Product(models.Model):  # type: ignore[misc]  # Django ships no types
    """A product, read through the cache by its SKU."""

    sku = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)


class PageViews(models.Model):  # type: ignore[misc]
    """A page's view count, written back from the cache in batches."""

    path = models.CharField(max_length=200, unique=True)
    views = models.IntegerField(default=0)
