"""What the web UI pages do, through Django's test client on real Postgres."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from crowdlab.front.forms import CLASSES_HELP
from crowdlab.front.views import label_keys
from crowdlab.labelling.models import Annotation, Assignment
from crowdlab.projects.models import Item, Project
from crowdlab.results.models import InferenceRun, RunStatus
from crowdlab.results.services import run_create
from tests.platform.factories import image_bytes
from tests.platform.front.crowds import SCENE_CLASSES, make_confused_crowd, run_now_synchronously
from tests.platform.results.reference_export import export_rows

pytestmark = pytest.mark.django_db


def _post_json(client: Client, url: str, payload: dict[str, Any]) -> Any:
    return client.post(url, data=json.dumps(payload), content_type="application/json")


# ---------------------------------------------------------------------------- labelling


def test_label_flow_next_submit_skip_undo(
    project: Project, annotator: Any, web_client_for: Callable[..., Client]
) -> None:
    client = web_client_for(annotator)
    page = client.get(reverse("front:label", args=[project.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    for entry in project.classes:
        assert f'data-label="{entry["name"]}"' in html and f'data-key="{entry["key"]}"' in html

    first = client.post(reverse("front:label-next", args=[project.pk])).json()
    assert first["done"] == 0
    task = first["task"]
    item = Item.objects.get(pk=task["item"]["id"])
    # Only the content: no gold, no other people's labels, no aggregate.
    assert set(task["item"]) <= {"id", "external_id", "kind", "text", "src", "json"}
    assert task["item"]["text"] == item.text

    answer = _post_json(
        client,
        reverse("front:label-submit", args=[project.pk]),
        {"assignment_id": task["assignment_id"], "label": "dog", "time_spent_ms": 1200},
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["done"] == 1 and body["submitted"]["label"] == "dog"
    assert body["task"]["item"]["id"] != item.pk
    saved = Annotation.objects.get(item=item, annotator=annotator)
    assert saved.label == "dog" and saved.time_spent_ms == 1200
    item.refresh_from_db()
    assert item.n_annotations == 1

    # A label that is not a class: 400 naming the allowed ones.
    bad = _post_json(
        client,
        reverse("front:label-submit", args=[project.pk]),
        {"assignment_id": body["task"]["assignment_id"], "label": "horse"},
    )
    assert bad.status_code == 400 and "cat, dog, bird" in bad.json()["error"]

    # Undo within the grace period: the label is gone and the item comes back.
    undone = _post_json(client, reverse("front:label-undo", args=[project.pk]), {})
    assert undone.status_code == 200, undone.content
    assert undone.json()["task"]["item"]["id"] == item.pk and undone.json()["done"] == 0
    assert not Annotation.objects.filter(item=item, annotator=annotator).exists()
    item.refresh_from_db()
    assert item.n_annotations == 0
    again = client.post(reverse("front:label-next", args=[project.pk])).json()
    assert again["task"]["item"]["id"] == item.pk

    # Skip: the next item is another one and the skipped one is not offered again.
    skipped = _post_json(
        client, reverse("front:label-skip", args=[project.pk]), {"assignment_id": again["task"]["assignment_id"]}
    )
    assert skipped.status_code == 200
    assert skipped.json()["task"]["item"]["id"] != item.pk
    assert Assignment.objects.get(item=item, annotator=annotator).status == "skipped"


def test_someone_elses_assignment_is_404(
    project: Project, annotator: Any, outsider: Any, web_client_for: Callable[..., Client]
) -> None:
    from crowdlab.projects.services import membership_add

    membership_add(project=project, user=outsider)
    theirs = web_client_for(outsider).post(reverse("front:label-next", args=[project.pk])).json()["task"]
    response = _post_json(
        web_client_for(annotator),
        reverse("front:label-submit", args=[project.pk]),
        {"assignment_id": theirs["assignment_id"], "label": "cat"},
    )
    assert response.status_code == 404
    assert not Annotation.objects.exists()


def test_label_page_sanitises_markdown_instructions(
    project: Project, annotator: Any, web_client_for: Callable[..., Client]
) -> None:
    project.instructions = "**Bold** rule\n\n<script>alert(1)</script>\n\n[x](javascript:alert(2))"
    project.save()
    html = web_client_for(annotator).get(reverse("front:label", args=[project.pk])).content.decode()
    assert "<strong>Bold</strong>" in html
    assert "<script>alert(1)" not in html and "javascript:alert" not in html


def test_nothing_left_message(project: Project, annotator: Any, web_client_for: Callable[..., Client]) -> None:
    client = web_client_for(annotator)
    for _ in range(project.items.count()):
        task = client.post(reverse("front:label-next", args=[project.pk])).json()["task"]
        _post_json(
            client,
            reverse("front:label-submit", args=[project.pk]),
            {"assignment_id": task["assignment_id"], "label": "cat"},
        )
    final = client.post(reverse("front:label-next", args=[project.pk])).json()
    assert final["task"] is None and final["done"] == 5 and "Nothing left" in final["message"]


# ---------------------------------------------------------------------------- requesters


def test_create_and_edit_project(requester: Any, web_client_for: Callable[..., Client]) -> None:
    client = web_client_for(requester)
    form = {
        "name": "Scenes",
        "instructions": "Look *carefully*.",
        "classes": "street, q\ninside city, w\nforest",
        "k": 4,
        "model": "ds",
        "retrain_every_n": 20,
        "retrain_every_minutes": 5,
        "lease_seconds": 300,
        "require_confirmation": "on",
        "is_active": "on",
    }
    response = client.post(reverse("front:project-new"), form)
    assert response.status_code == 302
    project = Project.objects.get(owner=requester, name="Scenes")
    assert project.classes == [
        {"name": "street", "key": "q"},
        {"name": "inside city", "key": "w"},
        {"name": "forest", "key": None},
    ]
    assert (project.k, project.model, project.require_confirmation) == (4, "ds", True)

    # A reserved key is refused with the service's message, on the classes field.
    bad = client.post(reverse("front:project-edit", args=[project.pk]), {**form, "classes": "street, s\nforest"})
    assert bad.status_code == 200
    assert "reserved for skip and undo" in bad.content.decode()
    project.refresh_from_db()
    assert project.classes[0]["key"] == "q"

    ok = client.post(reverse("front:project-edit", args=[project.pk]), {**form, "k": 5, "require_confirmation": ""})
    assert ok.status_code == 302
    project.refresh_from_db()
    assert project.k == 5 and project.require_confirmation is False


def test_upload_with_a_bad_row_imports_nothing(
    project: Project, requester: Any, web_client_for: Callable[..., Client]
) -> None:
    upload = SimpleUploadedFile("items.csv", b"external_id,text,gold\nn1,first,cat\nn2,second,zebra\nn3,third,\n")
    response = web_client_for(requester).post(
        reverse("front:project-upload", args=[project.pk]), {"items-file": upload}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was imported" in html and 'data-row="2"' in html and "zebra" in html
    assert project.items.count() == 5

    good = SimpleUploadedFile(
        "items.jsonl", b'{"external_id": "n1", "text": "first"}\n{"external_id": "n2", "text": "two\\nlines"}\n'
    )
    response = web_client_for(requester).post(reverse("front:project-upload", args=[project.pk]), {"items-file": good})
    assert response.status_code == 302
    assert project.items.count() == 7


def test_crowd_import(project: Project, requester: Any, web_client_for: Callable[..., Client]) -> None:
    upload = SimpleUploadedFile("crowd.csv", b"item,annotator,label\na0,w1,cat\na0,w2,dog\nnew1,w1,bird\n")
    response = web_client_for(requester).post(reverse("front:project-crowd", args=[project.pk]), {"crowd-file": upload})
    assert response.status_code == 302
    assert Annotation.objects.filter(project=project).count() == 3
    bad = SimpleUploadedFile("crowd.csv", b"item,annotator,label\na1,w1,horse\n")
    response = web_client_for(requester).post(reverse("front:project-crowd", args=[project.pk]), {"crowd-file": bad})
    assert response.status_code == 400 and "horse" in response.content.decode()
    assert Annotation.objects.filter(project=project).count() == 3


def test_members_add_and_remove(
    project: Project, requester: Any, outsider: Any, web_client_for: Callable[..., Client]
) -> None:
    client = web_client_for(requester)
    client.post(reverse("front:project-members", args=[project.pk]), {"username": "outsider", "action": "add"})
    assert project.memberships.filter(user=outsider).exists()
    client.post(reverse("front:project-members", args=[project.pk]), {"username": "outsider", "action": "remove"})
    assert not project.memberships.filter(user=outsider).exists()
    response = client.post(reverse("front:project-members", args=[project.pk]), {"username": "nobody"}, follow=True)
    assert "no user named" in response.content.decode()


def test_progress_page_charts(
    project: Project, requester: Any, annotator: Any, web_client_for: Callable[..., Client]
) -> None:
    from tests.platform.factories import AnnotationFactory

    items = list(project.items.order_by("id"))
    AnnotationFactory(item=items[0], annotator=annotator, label="cat")
    response = web_client_for(requester).get(reverse("front:project", args=[project.pk]))
    assert response.status_code == 200
    histogram = response.context["histogram"]
    assert histogram["labels"] == ["0", "1", "2", "3"] and histogram["values"] == [4, 1, 0, 0]
    assert sum(response.context["timeline"]["values"]) == 1
    assert 'id="hist-data"' in response.content.decode()


def test_run_now_and_status(project: Project, requester: Any, web_client_for: Callable[..., Client]) -> None:
    client = web_client_for(requester)
    response = client.post(reverse("front:run-now", args=[project.pk]), follow=True)
    run = InferenceRun.objects.get(project=project)
    assert run.status == RunStatus.PENDING and run.requested_by == requester
    html = response.content.decode()
    assert reverse("front:run-status", args=[project.pk, run.pk]) in html
    status = client.get(reverse("front:run-status", args=[project.pk, run.pk])).json()
    assert status["status"] == "pending" and status["finished"] is False
    assert run.cold_refit is False
    assert 'id="run-cold"' in html  # the full cold refit button
    # A second click does not start a second run.
    client.post(reverse("front:run-now", args=[project.pk]))
    assert InferenceRun.objects.filter(project=project).count() == 1


def test_run_now_as_a_full_cold_refit(
    project: Project, requester: Any, outsider: Any, web_client_for: Callable[..., Client]
) -> None:
    refused = web_client_for(outsider).post(reverse("front:run-now", args=[project.pk]), {"cold": "1"})
    assert refused.status_code == 404 and not InferenceRun.objects.filter(project=project).exists()
    response = web_client_for(requester).post(reverse("front:run-now", args=[project.pk]), {"cold": "1"}, follow=True)
    assert "(full cold refit)" in response.content.decode()
    assert InferenceRun.objects.get(project=project).cold_refit is True


def test_cancel_from_the_project_page(project: Project, requester: Any, web_client_for: Callable[..., Client]) -> None:
    client = web_client_for(requester)
    page = client.post(reverse("front:run-now", args=[project.pk]), follow=True).content.decode()
    run = InferenceRun.objects.get(project=project)
    cancel_url = reverse("front:run-cancel", args=[project.pk, run.pk])
    assert f'action="{cancel_url}"' in page and 'id="run-cancel"' in page
    # The page's JavaScript lives in static/js/run.js: the button is a plain form.
    assert "onclick" not in page
    response = client.post(cancel_url, follow=True)
    html = response.content.decode()
    assert f"Run {run.pk} cancelled" in html and 'id="run-cancel"' not in html
    assert 'id="run-held"' in html and "was cancelled" in html and "Cancelled by requester." in html
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    status = client.get(reverse("front:run-status", args=[project.pk, run.pk])).json()
    assert status["status"] == "cancelled" and status["finished"] is True
    # Again: nothing to cancel, said politely, nothing changes.
    again = client.post(cancel_url, follow=True).content.decode()
    assert "nothing to cancel" in again
    # Another project's run through this project's URL: 404.
    assert client.post(reverse("front:run-cancel", args=[project.pk, 999_999])).status_code == 404


# ---------------------------------------------------------------------------- results, export, dashboards


@pytest.fixture
def scenes(scene_owner: Any) -> tuple[Project, Any, list[Any], InferenceRun]:
    project, truth, annotators = make_confused_crowd(owner=scene_owner, n_items=60)
    run = run_now_synchronously(project)
    return project, truth, annotators, run


def test_results_filters(scenes: Any, scene_owner: Any, web_client_for: Callable[..., Client]) -> None:
    project, _truth, _annotators, run = scenes
    client = web_client_for(scene_owner)
    url = reverse("front:results", args=[project.pk])
    everything = client.get(url)
    assert everything.context["page"].paginator.count == 60
    assert len(everything.context["page"].object_list) == 50
    second = client.get(url, {"page": 2, "label": ""})
    assert len(second.context["page"].object_list) == 10
    assert "page=1" in second.content.decode() and "label=" in second.content.decode()
    streets = client.get(url, {"label": "street"}).context["page"].paginator.count
    assert streets == run.labels.filter(label="street").count() > 0
    # The confuser disagrees on every true street item.
    disagreeing = client.get(url, {"disagreement": "on"}).context["page"]
    ids = {row.item_id for row in disagreeing.paginator.object_list}
    assert {row.item_id for row in run.labels.filter(label="street")} <= ids
    for row in disagreeing.paginator.object_list:
        assert row.n_agree < row.n_human
    doubtful = client.get(url, {"max_confidence": "0.9"}).context["page"].paginator.object_list
    assert all(row.confidence <= 0.9 for row in doubtful)
    low = client.get(url, {"max_agreement": "0.7"}).context["page"].paginator.object_list
    assert all((row.n_agree or 0) / row.n_human <= 0.7 for row in low)
    bad = client.get(url, {"max_confidence": "2"})
    assert bad.status_code == 200 and "less than or equal to 1" in bad.content.decode()


def test_export_csv_matches_export_rows(scenes: Any, scene_owner: Any, web_client_for: Callable[..., Client]) -> None:
    project = scenes[0]
    response = web_client_for(scene_owner).get(reverse("front:export", args=[project.pk, "csv"]))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    expected = list(export_rows(project=project))
    assert [(r["item"], r["label"]) for r in rows] == [(r["item"], r["label"]) for r in expected]
    assert len(rows) == 60


def test_dashboard_shows_the_known_confusion(
    scenes: Any, scene_owner: Any, web_client_for: Callable[..., Client]
) -> None:
    project, _truth, annotators, run = scenes
    client = web_client_for(scene_owner)
    response = client.get(reverse("front:dashboard", args=[project.pk]), {"sort": "learned_accuracy"})
    assert response.status_code == 200
    rows = response.context["rows"]
    assert next(row.username for row in rows) == "scenes_confuser"  # ascending: worst first
    confuser = rows[0]
    assert confuser.n_annotations == 60 and confuser.gold_accuracy is not None
    assert confuser.learned_accuracy < min(row.learned_accuracy for row in rows[1:])
    # The top confused pair (mean of the annotators' confusions for DS) is street → inside city.
    common = response.context["common"]
    assert common.pairs[0][:2] == ("street", "inside city")
    assert "street</strong> → inside city" in response.content.decode()

    page = client.get(reverse("front:dashboard-annotator", args=[project.pk, annotators[4].pk]))
    heatmap = page.context["learned_heatmap"]
    names = heatmap["classes"]
    assert names == [c["name"] for c in SCENE_CLASSES]
    assert heatmap["matrix"][0][1] > 0.8  # true street → given inside city
    raw = page.context["raw_counts"]
    street_items = run.labels.filter(label="street").count()
    assert raw[0][1] == street_items and raw[0][0] == 0
    assert len(page.context["recent"]) == 20

    bad_sort = client.get(reverse("front:dashboard", args=[project.pk]), {"sort": "nonsense"}, follow=True)
    assert "allowed: username" in bad_sort.content.decode()


def test_dashboard_run_history_says_how_each_run_was_fitted(
    scenes: Any, scene_owner: Any, web_client_for: Callable[..., Client]
) -> None:
    project, _truth, _annotators, run = scenes
    second = run_now_synchronously(project, params={"warm_min_annotations": 0})
    cold = run_create(project=project, cold=True)
    assert cold is not None
    html = web_client_for(scene_owner).get(reverse("front:dashboard", args=[project.pk])).content.decode()
    assert second.fit_mode == "warm" and second.warm_start_from_id == run.pk
    assert f"warm from run {run.pk}" in html
    assert "no earlier published ds run with a checkpoint" in html  # the first run's reason
    assert "since the last cold fit" in html  # the warm run's reason
    assert "cold refit requested" in html  # the pending cold refit
    from crowdlab.results.models import InferenceRun, RunTrigger

    InferenceRun.objects.filter(pk=cold.pk).update(status="published", fit_mode="cold", trigger=RunTrigger.SETTLE)
    html = web_client_for(scene_owner).get(reverse("front:dashboard", args=[project.pk])).content.decode()
    assert "cold (labels settled)" in html


def test_dashboard_annotator_unknown_person_is_404(
    project: Project, requester: Any, outsider: Any, web_client_for: Callable[..., Client]
) -> None:
    response = web_client_for(requester).get(reverse("front:dashboard-annotator", args=[project.pk, outsider.pk]))
    assert response.status_code == 404


def test_conal_run_feeds_omega_histogram_and_learned_common_confusion(
    scene_owner: Any, web_client_for: Callable[..., Client]
) -> None:
    import torch

    torch.set_num_threads(1)
    project, _truth, annotators = make_confused_crowd(owner=scene_owner, n_items=60, model="conal", name="Conal")
    # Few epochs and a small classifier: this checks the pages, not CoNAL's quality.
    run = run_now_synchronously(project, params={"epochs": 15, "hidden": 16})
    client = web_client_for(scene_owner)
    dashboard = client.get(reverse("front:dashboard", args=[project.pk]))
    common = dashboard.context["common"]
    assert common.learned is True and len(common.matrix) == 4
    assert all(row.mean_omega is not None for row in dashboard.context["rows"])
    page = client.get(reverse("front:dashboard-annotator", args=[project.pk, annotators[4].pk]))
    histogram = page.context["omega_histogram"]
    assert page.context["has_omegas"] and sum(histogram["values"]) == 60
    assert len(run.loss_history) > 1
    assert 'id="omega-chart"' in page.content.decode()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"kind": "text", "text": "one\ntwo"}, {"text": "one\ntwo"}),
        ({"kind": "image", "url": "https://example.org/a.jpg"}, {"src": "https://example.org/a.jpg"}),
        ({"kind": "audio", "url": "https://example.org/a.mp3"}, {"src": "https://example.org/a.mp3"}),
        ({"kind": "json", "data": {"b": [1, 2], "a": "x"}}, {"json": {"b": [1, 2], "a": "x"}}),
    ],
)
def test_item_payload_per_kind(
    fields: dict[str, Any],
    expected: dict[str, Any],
    project: Project,
    annotator: Any,
    web_client_for: Callable[..., Client],
) -> None:
    Item.objects.filter(project=project).delete()
    Item.objects.create(project=project, external_id="only", gold_label="cat", **fields)
    task = web_client_for(annotator).post(reverse("front:label-next", args=[project.pk])).json()["task"]
    for key, value in expected.items():
        if key == "json":  # pretty-printed, one value per line
            assert json.loads(task["item"]["json"]) == value and "\n  " in task["item"]["json"]
        else:
            assert task["item"][key] == value
    assert "cat" not in json.dumps(task)  # the gold label never reaches the annotator


def test_default_keys_never_collide_with_explicit_ones(
    requester: Any, annotator: Any, web_client_for: Callable[..., Client]
) -> None:
    from crowdlab.projects.services import membership_add, project_create

    project = project_create(
        owner=requester,
        name="Keys",
        classes=[
            {"name": "a", "key": "2"},
            {"name": "b"},
            {"name": "c"},
        ],
    )
    membership_add(project=project, user=annotator)
    classes = web_client_for(annotator).get(reverse("front:label", args=[project.pk])).context["classes"]
    assert [c["key"] for c in classes] == ["2", None, "3"]


def test_class_keys_behave_as_the_form_help_and_the_readme_say() -> None:
    classes = [{"name": f"c{n}", "key": None} for n in range(1, 12)]
    classes[2]["key"] = "f"  # the third class has its own key
    classes[6]["key"] = "5"  # the seventh claims the fifth's digit
    keys = [entry["key"] for entry in label_keys(classes)]
    # Own key only (not also its digit 3); a taken digit gives nothing; past the ninth: click only.
    assert keys == ["1", "2", "f", "4", None, "6", "5", "8", "9", None, None]
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    for text in (CLASSES_HELP, readme):
        assert "labelled with that key only" in text
        assert "unless another class has that digit as its own key" in text
        assert "past the ninth, a class without a key is labelled by clicking" in text
        assert "S, U and ?" in text
    assert "(its own key, or 1–9 by position)" not in readme  # the old wording, which promised both


def test_uploaded_image_is_served_to_owner_and_to_its_annotator_only(
    project: Project,
    requester: Any,
    annotator: Any,
    outsider: Any,
    settings: Any,
    tmp_path: Any,
    web_client_for: Callable[..., Client],
) -> None:
    from crowdlab.projects.models import ItemKind
    from crowdlab.projects.services import membership_add

    settings.MEDIA_ROOT = str(tmp_path)
    Item.objects.filter(project=project).delete()
    item = Item(project=project, external_id="img", kind=ItemKind.IMAGE)
    png = image_bytes("PNG")
    item.image.save("cat.png", SimpleUploadedFile("cat.png", png), save=True)
    url = reverse("front:item-media", args=[project.pk, item.pk])

    membership_add(project=project, user=outsider)  # a member who was never handed this item
    assert web_client_for(outsider).get(url).status_code == 403
    task = web_client_for(annotator).post(reverse("front:label-next", args=[project.pk])).json()["task"]
    assert task["item"]["src"] == url
    response = web_client_for(annotator).get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == png
    assert web_client_for(requester).get(url).status_code == 200
