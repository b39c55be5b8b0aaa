"""The shop's URLs."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("products/", views.listing),
    path("catalogue/", views.catalogue),
    path("products/<str:sku>/", views.product),
]
