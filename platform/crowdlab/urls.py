from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("api.urls")),
    path("", include("front.urls")),
]

# A lost database connection raised outside a view (e.g. by a middleware) is a
# 503 with Retry-After too; everything else is Django's plain 500.
handler500 = "crowdlab.middleware.server_error"
