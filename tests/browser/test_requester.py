"""Requester pages in Chromium: upload with a bad row, run now with progress, CSV download."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from crowdlab.live.services import run_execute
from crowdlab.projects.models import Item
from crowdlab.projects.roles import make_requester
from crowdlab.results.models import AggregatedLabel, InferenceRun, RunStatus
from tests.platform.factories import UserFactory
from tests.platform.front.crowds import make_confused_crowd, run_now_synchronously

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _requester(username: str = "req") -> Any:
    user = UserFactory(username=username)
    make_requester(user)
    return user


def test_upload_with_one_bad_row_shows_the_error_and_imports_nothing(new_page: Callable[..., Page]) -> None:
    owner = _requester()
    project, _, _ = make_confused_crowd(owner=owner, n_items=12)
    before = Item.objects.filter(project=project).count()
    page = new_page(owner)
    page.goto(f"/p/{project.pk}/upload/")
    content = (
        "external_id,text,gold\n"
        "new-1,a quiet street at night,street\n"
        "new-2,a pine forest,jungle\n"  # row 2: not a class
        "new-3,waves on the rocks,coast\n"
    )
    page.set_input_files(
        "input[name='items-file']", files=[{"name": "items.csv", "mimeType": "text/csv", "buffer": content.encode()}]
    )
    page.click("#upload-items")
    errors = page.locator("#import-errors")
    expect(errors).to_be_visible()
    expect(errors).to_contain_text("Nothing was imported")
    row = errors.locator("tr[data-row='2']")
    expect(row).to_contain_text("gold")
    expect(row).to_contain_text("jungle")
    page.screenshot(path=str(ARTIFACTS / "upload-errors.png"), full_page=True)
    assert Item.objects.filter(project=project).count() == before
    assert not Item.objects.filter(project=project, external_id__startswith="new-").exists()


def test_cancel_a_run_from_the_project_page(new_page: Callable[..., Page]) -> None:
    from crowdlab.results.services import run_cancel

    owner = _requester()
    project, _, _ = make_confused_crowd(owner=owner, n_items=12)
    page = new_page(owner)
    page.goto(f"/p/{project.pk}/")
    page.click("#run-now")
    expect(page.locator("#run-text")).to_contain_text("Waiting for an inference worker")
    first = InferenceRun.objects.get(project=project)
    # Cancelled elsewhere (API, admin) while the page follows it: the poller says so and hides the button.
    run_cancel(run=first)
    expect(page.locator("#run-text")).to_contain_text("Cancelled", timeout=20_000)
    expect(page.locator("#run-cancel")).to_be_hidden()
    expect(page.locator("#run-now")).to_be_enabled()
    # The button itself: queue a run and cancel it from the page.
    page.click("#run-now")
    second = InferenceRun.objects.filter(project=project).exclude(pk=first.pk).get()
    page.click("#run-cancel")
    expect(page.locator(".msg-success")).to_contain_text(f"Run {second.pk} cancelled")
    expect(page.locator("#run-held")).to_contain_text("was cancelled")
    page.screenshot(path=str(ARTIFACTS / "project-run-cancelled.png"), full_page=True)
    second.refresh_from_db()
    assert second.status == RunStatus.CANCELLED and second.error == f"Cancelled by {owner.username}."
    assert run_execute(run_id=second.pk) == "skipped"  # a cancelled pending run never starts


def test_run_now_progress_then_csv_download_matches_the_database(new_page: Callable[..., Page]) -> None:
    owner = _requester()
    project, _, _ = make_confused_crowd(owner=owner, n_items=40)
    page = new_page(owner)
    page.goto(f"/p/{project.pk}/")
    page.click("#run-now")
    panel = page.locator("#run-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#run-text")).to_contain_text("Waiting for an inference worker")
    run = InferenceRun.objects.get(project=project)
    assert run.status == RunStatus.PENDING
    # Play the worker: execute the queued run through live's service, in this process.
    assert run_execute(run_id=run.pk) == RunStatus.PUBLISHED
    expect(page.locator("#run-text")).to_contain_text("Published", timeout=20_000)
    expect(page.locator("#run-progress")).to_have_attribute("aria-valuenow", "100")
    page.screenshot(path=str(ARTIFACTS / "project-progress.png"), full_page=True)

    page.goto(f"/p/{project.pk}/results/")
    with page.expect_download() as info:
        page.get_by_test_id("export-csv").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8"))))
    stored = {agg.item.external_id: agg for agg in AggregatedLabel.objects.filter(run=run).select_related("item")}
    assert len(rows) == Item.objects.filter(project=project).count() == len(stored) == 40
    for row in rows:
        agg = stored[row["item"]]
        assert row["label"] == agg.label
        assert float(row["confidence"]) == pytest.approx(agg.confidence)
        assert int(row["run_id"]) == run.pk
        assert int(row["n_annotations"]) == agg.item.n_annotations
        for name, p in zip(project.class_names, agg.probabilities, strict=True):
            assert float(row[f"p:{name}"]) == pytest.approx(p)


def test_results_filters_in_the_browser(new_page: Callable[..., Page]) -> None:
    owner = _requester()
    project, _, _ = make_confused_crowd(owner=owner, n_items=30)
    run = run_now_synchronously(project)
    page = new_page(owner)
    page.goto(f"/p/{project.pk}/results/")
    page.select_option("select[name=label]", "street")
    page.check("input[name=disagreement]")
    page.click("form.filters button[type=submit]")
    streets = run.labels.filter(label="street").count()
    expect(page.locator("#results-table tbody tr")).to_have_count(streets)
    page.screenshot(path=str(ARTIFACTS / "results.png"), full_page=True)
