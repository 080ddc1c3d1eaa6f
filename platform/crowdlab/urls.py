from __future__ import annotations

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script as a file of its own
    # (no inline script); its assets come from drf-spectacular-sidecar.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/swagger_ui.html"),
         name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
         name="api-redoc"),
    path("api/", include("api.urls")),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin, JSON, the docs).
    path("favicon.ico", RedirectView.as_view(url=static("favicon.ico"), permanent=False)),
    path("", include("front.urls")),
]

# JSON under /api/ or the page; a lost database connection raised outside a view is a 503.
handler404 = "crowdlab.views.not_found"
handler500 = "crowdlab.views.server_error"
