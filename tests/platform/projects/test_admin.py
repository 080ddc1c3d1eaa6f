"""The admin's forms meet the same input limits as the API (issue 14)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from crowdlab.projects.models import Item, Project

pytestmark = pytest.mark.django_db


def test_admin_item_form_refuses_deep_json_and_long_text(project: Project, admin_user: Any) -> None:
    item = project.items.order_by("id").first()
    client = Client()
    client.force_login(admin_user)
    form = {
        "project": project.pk,
        "external_id": item.external_id,
        "kind": "json",
        "text": "",
        "url": "",
        "features": "",
        "gold_label": "",
        "n_annotations": 0,
        "generated_annotations-TOTAL_FORMS": 0,
        "generated_annotations-INITIAL_FORMS": 0,
    }
    url = f"/admin/projects/item/{item.pk}/change/"
    # json.loads alone recursed into a 500, on cleaning and on re-rendering the form.
    response = client.post(url, {**form, "data": "[" * 100_000 + "]" * 100_000})
    assert response.status_code == 200
    assert "JSON_MAX_DEPTH" in response.content.decode()
    response = client.post(url, {**form, "data": json.dumps({"ok": 1}), "text": "x" * 1_000_001})
    assert response.status_code == 200
    assert "at most 1000000 characters" in response.content.decode()
    item.refresh_from_db()
    assert item.kind == "text" and item.data is None
    response = client.post(url, {**form, "data": json.dumps({"ok": 1})})
    assert response.status_code == 302
    assert Item.objects.get(pk=item.pk).data == {"ok": 1}
