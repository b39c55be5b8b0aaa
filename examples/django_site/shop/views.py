"""Views: a product page read through cachewise, a cached listing, a counted page."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_page

from cachewise import MISSING

from . import caches
from .models import Product


def product(request: HttpRequest, sku: str) -> HttpResponse:
    """Read-through: the first request loads the row, the next ones hit the cache."""
    row = caches.products().read(sku, default=MISSING)
    if row is MISSING:
        raise Http404(sku)
    count_view(request.path)
    return render(request, "shop/product.html", {"product": row})


@cache_page(60)  # type: ignore[untyped-decorator]  # Django ships no types
def listing(request: HttpRequest) -> HttpResponse:
    """The whole response cached by Django's ``@cache_page`` on the cachewise backend."""
    return render(request, "shop/listing.html", {"products": Product.objects.order_by("sku")})


def catalogue(request: HttpRequest) -> HttpResponse:
    """A page whose expensive part is a ``{% cache %}`` template fragment."""
    return render(request, "shop/catalogue.html", {"products": Product.objects.order_by("sku")})


def count_view(path: str) -> None:
    """Write-back: the count changes in the cache; the table catches up at the flush."""
    views = caches.page_views()
    row = views.read(path, default=None) or {"path": path, "views": 0}
    views.write(path, {**row, "views": row["views"] + 1})
