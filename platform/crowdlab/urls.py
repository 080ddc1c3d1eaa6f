from __future__ import annotations

from csp.decorators import csp_update
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

# ReDoc's page, on top of the site-wide Content-Security-Policy: ReDoc
# (styled-components) creates <style> elements and cannot start if they are
# refused, so exactly these contents are allowed (an empty element, which it
# fills through the CSSOM, and its one fixed stylesheet); and its search runs in
# a worker its own script builds from a blob. Every inline script, and any
# other inline style, stays refused; tests/browser/test_csp.py checks it works.
REDOC_CSP = {
    "style-src": [
        "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",
        "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
    ],
    "worker-src": ["'self'", "blob:"],
}

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script as a file of its own
    # (no inline script); its assets come from drf-spectacular-sidecar.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
    path(
        "api/redoc/",
        csp_update(REDOC_CSP)(SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html")),
        name="api-redoc",
    ),
    path("api/", include("crowdlab.api.urls")),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin, JSON, the docs).
    path("favicon.ico", RedirectView.as_view(url=static("favicon.ico"), permanent=False)),
    path("", include("crowdlab.front.urls")),
]

# JSON under /api/ or the page; a lost database connection raised outside a view is a 503.
handler404 = "crowdlab.views.not_found"
handler500 = "crowdlab.views.server_error"
