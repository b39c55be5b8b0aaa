"""The example site's tests: ``python manage.py test shop`` (PostgreSQL and, if set, Redis)."""

from __future__ import annotations

import unittest
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import TransactionTestCase

from . import caches
from .models import PageViews, Product


class SiteTests(TransactionTestCase):  # type: ignore[misc]
    """Each promise of the site, counted in queries."""

    def setUp(self) -> None:
        Product.objects.create(sku="tea", name="Tea", price=Decimal("3.10"))
        Product.objects.create(sku="cake", name="Cake", price=Decimal("2.50"))

    def tearDown(self) -> None:
        caches.close_all(forget=True)
        cache.clear()

    def test_product_page_is_read_through_once(self) -> None:
        with self.assertNumQueries(2):  # the product row, and the page's view counter
            first = self.client.get("/products/tea/")
        with self.assertNumQueries(0):  # both from the cache now
            second = self.client.get("/products/tea/")
        self.assertContains(first, "Tea")
        self.assertEqual(first.content, second.content)
        self.assertEqual(self.client.get("/products/none/").status_code, 404)

    def test_write_through_shows_at_once(self) -> None:
        self.client.get("/products/tea/")
        row = caches.products().read("tea")
        caches.products().write("tea", {**row, "price": Decimal("4.20")})
        self.assertEqual(Product.objects.get(sku="tea").price, Decimal("4.20"))
        with self.assertNumQueries(0):
            self.assertContains(self.client.get("/products/tea/"), "4.20")

    def test_page_views_are_counted_with_write_back(self) -> None:
        for _ in range(20):
            self.client.get("/products/cake/")
        self.assertFalse(PageViews.objects.exists())  # dirty in the cache, not yet in the table
        views = caches.page_views()
        self.assertEqual(views.read("/products/cake/")["views"], 20)
        views.flush()
        self.assertEqual(PageViews.objects.get(path="/products/cake/").views, 20)
        self.assertEqual(views.stats.source_writes, 1)  # 20 views, one row written

    def test_cache_page_serves_the_listing_without_queries(self) -> None:
        first = self.client.get("/products/")
        Product.objects.create(sku="new", name="New", price=Decimal("1.00"))
        with self.assertNumQueries(0):
            second = self.client.get("/products/")
        self.assertEqual(first.content, second.content)  # cached for 60 s, as asked

    def test_template_fragment_is_cached(self) -> None:
        first = self.client.get("/catalogue/")
        with self.assertNumQueries(0):
            second = self.client.get("/catalogue/")
        self.assertContains(first, "Cake")
        self.assertEqual(first.content, second.content)

    @unittest.skipUnless(settings.MODE == "persistent", "CONN_MAX_AGE mode only")
    def test_persistent_connection_is_reused_across_requests(self) -> None:
        self.client.get("/products/tea/")
        before = connection.connection
        self.client.get("/products/cake/")
        self.assertIs(connection.connection, before)
