"""The site-wide Content-Security-Policy header (``crowdlab.middleware``).

Every response carries it, the API's hot paths included; the header is the
one django-csp builds from ``CONTENT_SECURITY_POLICY``, built once, and a
per-view policy (django-csp's decorators) still wins.
"""

from __future__ import annotations

from typing import Any

import pytest
from csp.constants import SELF
from csp.decorators import csp_update
from csp.utils import build_policy
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from crowdlab.middleware import ContentSecurityPolicyMiddleware
from crowdlab.projects.models import Project

pytestmark = pytest.mark.django_db


def _logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _directives(header: str) -> dict[str, list[str]]:
    parts = (part.strip().split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in parts}


def test_pages_api_and_hot_paths_carry_the_policy(project: Project, requester: Any, annotator: Any) -> None:
    token = Token.objects.create(user=annotator).key
    hot = APIClient()
    hot.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    responses = {
        "login page": Client().get(reverse("login")),
        "project page": _logged_in(requester).get(reverse("front:project", args=[project.pk])),
        "api": APIClient().get("/api/schema/"),
        "next-task (hot path)": hot.post(f"/api/projects/{project.pk}/next-task/"),
    }
    for name, response in responses.items():
        assert response.status_code == 200, name
        header = response["Content-Security-Policy"]
        assert header == build_policy(), name
        policy = _directives(header)
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"], name
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"], name
        assert "'unsafe-inline'" not in header and "'unsafe-eval'" not in header, name


def test_a_changed_policy_is_picked_up(settings: Any, requester: Any) -> None:
    client = _logged_in(requester)
    assert "report-uri" not in client.get(reverse("home"))["Content-Security-Policy"]
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": [SELF], "report-uri": "/csp-report/"}}
    assert client.get(reverse("home"))["Content-Security-Policy"] == "default-src 'self'; report-uri /csp-report/"


def test_a_per_view_policy_still_goes_through_django_csp() -> None:
    @csp_update({"img-src": "https://images.example"})
    def view(request: Any) -> HttpResponse:
        return HttpResponse("ok")

    middleware = ContentSecurityPolicyMiddleware(view)
    request = RequestFactory().get("/")
    middleware.process_request(request)
    response = middleware.process_response(request, view(request))
    assert "https://images.example" in _directives(response["Content-Security-Policy"])["img-src"]
    # A view that wrote its own header keeps it (the media view does).
    own = HttpResponse("x")
    own["Content-Security-Policy"] = "default-src 'none'; sandbox"
    assert middleware.process_response(request, own)["Content-Security-Policy"] == "default-src 'none'; sandbox"
