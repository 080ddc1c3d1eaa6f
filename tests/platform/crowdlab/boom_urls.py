"""The site's URLs plus two views that fail, for the 500 handler's tests."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from crowdlab.urls import handler500
from crowdlab.urls import urlpatterns as site_urls

__all__ = ["handler500", "urlpatterns"]


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret detail that must not reach the page")


urlpatterns = [path("boom/", boom), path("api/boom/", boom), *site_urls]
