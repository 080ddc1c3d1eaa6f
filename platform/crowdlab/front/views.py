"""Server-rendered pages of crowdlab.

Views stay thin: they authorise through ``projects.selectors`` (404 for people
with no relation to a project, 403 for members asking for owner pages), call a
service or selector and render. Access rules:

* annotators: their home list and the labelling page of projects they belong to;
* requesters: create projects; progress, upload, results, export and the
  confusion dashboard of the projects they own (the dashboard of their own
  projects is theirs to read: they pay for the crowd and choose whom to keep);
* admins (staff): everything.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from crowdlab import jsonlimits
from crowdlab.labelling.importing import crowd_import
from crowdlab.labelling.models import Assignment
from crowdlab.labelling.selectors import annotator_progress, assignment_get_own
from crowdlab.labelling.services import (
    UNDO_GRACE_SECONDS,
    AnnotationConflict,
    annotation_submit,
    annotation_undo,
    assignment_skip,
    membership_remove,
    next_task,
    validate_label,
)
from crowdlab.live.triggers import embed_items_on_commit, new_annotations_count, request_run
from crowdlab.projects.images import ImageRejected, image_type_of
from crowdlab.projects.importing import ImportValidationError, items_import
from crowdlab.projects.models import Item, ItemKind, Project
from crowdlab.projects.roles import is_requester, signed_in
from crowdlab.projects.selectors import (
    project_get_for_annotator,
    project_get_for_owner,
    project_members,
    projects_annotated_by,
    projects_owned_by,
    user_get_by_username,
)
from crowdlab.projects.services import membership_add, project_create, project_update
from crowdlab.results.export import EXPORT_FORMATS, export_response
from crowdlab.results.models import InferenceRun, RunStatus, RunTrigger
from crowdlab.results.selectors import active_run, automatic_runs_held_by, confusions_for_run, latest_published_run
from crowdlab.results.services import RunNotActive
from crowdlab.results.services import run_cancel as run_cancel_service

from . import selectors
from .forms import CrowdUploadForm, ItemUploadForm, MemberAddForm, ProjectForm, ResultsFilterForm

RESULTS_PAGE_SIZE = 50


def _form_errors_from(form: Any, error: ValidationError) -> None:
    """Attach a service's ``ValidationError`` to the form fields it names."""
    if hasattr(error, "error_dict"):
        for name, errors in error.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, error.messages)


# ---------------------------------------------------------------------------- home


@login_required
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    annotated = projects_annotated_by(user).order_by("name")
    context: dict[str, Any] = {
        "annotator_projects": selectors.annotator_project_progress(user=signed_in(user), projects=annotated),
        "can_create": is_requester(user),
        "owned_projects": [],
    }
    if is_requester(user):
        owned = projects_owned_by(user).select_related("owner").order_by("name")
        context["owned_projects"] = [
            {"project": project, "progress": selectors.project_progress(project=project)} for project in owned
        ]
    return render(request, "front/home.html", context)


# ---------------------------------------------------------------------------- annotators


def _item_payload(item: Item) -> dict[str, Any]:
    """What the labelling page renders: the item's content only (no labels, no gold)."""
    payload: dict[str, Any] = {"id": item.pk, "external_id": item.external_id, "kind": item.kind}
    if item.kind == ItemKind.TEXT:
        payload["text"] = item.text
    elif item.kind == ItemKind.IMAGE:
        payload["src"] = reverse("front:item-media", args=[item.project_id, item.pk]) if item.image else item.url
        payload["text"] = item.text
    elif item.kind == ItemKind.AUDIO:
        payload["src"] = item.url
        payload["text"] = item.text
    else:
        payload["json"] = json.dumps(item.data, indent=2, ensure_ascii=False, sort_keys=False)
        payload["text"] = item.text
    return payload


def _task_payload(*, project: Project, user: Any, assignment: Assignment | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": None,
        "done": annotator_progress(user=user, project=project),
        **extra,
    }
    if assignment is not None:
        body["task"] = {
            "assignment_id": assignment.pk,
            "expires_at": assignment.expires_at.isoformat(),
            "item": _item_payload(assignment.item),
        }
    elif not project.is_active:
        body["message"] = "This project is paused; no tasks are handed out right now."
    else:
        body["message"] = "Nothing left for you to label in this project. Thank you!"
    return body


def _json_error(message: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def _read_json(request: HttpRequest) -> dict[str, Any]:
    try:
        # Depth-checked before decoding (crowdlab.jsonlimits): json.loads alone
        # recursed into a RecursionError on deeply nested bodies.
        body = jsonlimits.loads(request.body or b"{}")
    except RequestDataTooBig:
        raise ValidationError({"body": "larger than the limit (DATA_UPLOAD_MAX_MEMORY_SIZE)."}) from None
    except jsonlimits.JSONTooDeep as exc:
        raise ValidationError({"body": str(exc)}) from None
    except ValueError as exc:  # malformed JSON, not UTF-8, NaN/Infinity
        raise ValidationError({"body": f"not valid JSON ({exc})."}) from None
    if not isinstance(body, dict):
        raise ValidationError({"body": "expected a JSON object."})
    return body


def _validation_message(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return " ".join(f"{name}: {' '.join(messages_)}" for name, messages_ in error.message_dict.items())
    return " ".join(error.messages)


def label_keys(classes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each class with the key that labels it on the labelling page.

    A class with its own key gets that key only. A class without one gets its
    position digit (1–9), unless another class has that digit as its own key;
    past the ninth it gets none (click only). ``CLASSES_HELP`` and the README
    say exactly this: change them together.
    """
    taken = {str(entry["key"]).lower() for entry in classes if entry.get("key")}
    keyed = []
    for index, entry in enumerate(classes):
        key = entry.get("key")
        if not key and index < 9 and str(index + 1) not in taken:
            key = str(index + 1)
        keyed.append({"name": entry["name"], "key": key})
    return keyed


@login_required
@require_GET
def label_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_annotator(user=request.user, project_id=project_id)
    classes = label_keys(project.classes)
    return render(
        request,
        "front/label.html",
        {
            "project": project,
            "classes": classes,
            "config": {
                "next_url": reverse("front:label-next", args=[project.pk]),
                "submit_url": reverse("front:label-submit", args=[project.pk]),
                "skip_url": reverse("front:label-skip", args=[project.pk]),
                "undo_url": reverse("front:label-undo", args=[project.pk]),
                # An expired session answers a fetch with this page (after a redirect).
                "login_url": reverse("login"),
                "page_url": request.get_full_path(),
                "confirm": project.require_confirmation,
                "undo_seconds": UNDO_GRACE_SECONDS,
                "classes": classes,
            },
        },
    )


# POST, not GET: asking for the next task leases an item (writes an
# assignment), and a GET must not change state (prefetchers, link checkers and
# reloads would hold items nobody is looking at).
@login_required
@require_POST
def label_next(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_get_for_annotator(user=request.user, project_id=project_id)
    assignment = next_task(project=project, annotator=signed_in(request.user))
    return JsonResponse(_task_payload(project=project, user=request.user, assignment=assignment))


def _own_assignment(request: HttpRequest, project: Any, body: dict[str, Any], verb: str) -> Any:
    """The caller's assignment named by ``body["assignment_id"]``, or None when it
    is not theirs; ValidationError when the id is missing or not an integer."""
    assignment_id = body.get("assignment_id")
    if not isinstance(assignment_id, int):
        raise ValidationError({"assignment_id": f"give the integer id of the task you are {verb}."})
    return assignment_get_own(user=signed_in(request.user), project=project, assignment_id=assignment_id)


@login_required
@require_POST
def label_submit(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_get_for_annotator(user=request.user, project_id=project_id)
    try:
        body = _read_json(request)
        assignment = _own_assignment(request, project, body, "answering")
        if assignment is None:
            return _json_error("This task is not yours (or no longer exists); reload the page.", 404)
        time_spent = body.get("time_spent_ms")
        annotation = annotation_submit(
            item=assignment.item,
            annotator=signed_in(request.user),
            # The body is untrusted JSON: the service's own check makes the label a str
            # (a 400 naming the classes otherwise, as annotation_submit would word it).
            label=validate_label(project=project, label=body.get("label")),
            time_spent_ms=time_spent if isinstance(time_spent, int) and time_spent >= 0 else None,
        )
    except ValidationError as error:
        return _json_error(_validation_message(error), 400)
    except AnnotationConflict as conflict:
        return _json_error(str(conflict), 409)
    except PermissionDenied as denied:
        return _json_error(str(denied), 403)
    following = next_task(project=project, annotator=signed_in(request.user))
    return JsonResponse(
        _task_payload(
            project=project,
            user=request.user,
            assignment=following,
            submitted={"item": assignment.item.external_id, "label": annotation.label},
        )
    )


@login_required
@require_POST
def label_skip(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_get_for_annotator(user=request.user, project_id=project_id)
    try:
        body = _read_json(request)
        assignment = _own_assignment(request, project, body, "skipping")
        if assignment is None:
            return _json_error("This task is not yours (or no longer exists); reload the page.", 404)
        assignment_skip(assignment=assignment, annotator=signed_in(request.user))
    except ValidationError as error:
        return _json_error(_validation_message(error), 400)
    following = next_task(project=project, annotator=signed_in(request.user))
    return JsonResponse(_task_payload(project=project, user=request.user, assignment=following, skipped=True))


@login_required
@require_POST
def label_undo(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_get_for_annotator(user=request.user, project_id=project_id)
    try:
        assignment = annotation_undo(project=project, annotator=signed_in(request.user))
    except ValidationError as error:
        return _json_error(_validation_message(error), 400)
    return JsonResponse(_task_payload(project=project, user=request.user, assignment=assignment, undone=True))


@login_required
@require_GET
def item_media(request: HttpRequest, project_id: int, item_id: int) -> FileResponse:
    """An uploaded item image, for the owner/admin or an annotator holding the item."""
    try:
        project = project_get_for_owner(user=request.user, project_id=project_id)
    except PermissionDenied:
        project = project_get_for_annotator(user=request.user, project_id=project_id)
        if not Assignment.objects.filter(item_id=item_id, annotator=signed_in(request.user)).exists():
            raise
    item = Item.objects.filter(project=project, pk=item_id).first()
    if item is None or not item.image:
        raise Http404("No such image.")
    handle = item.image.open("rb")
    try:
        # The type comes from the bytes, never from the stored name: files
        # uploaded before names were chosen by the server kept the client's
        # (an .html or .svg among them). Anything else is not served.
        kind = image_type_of(handle, verify=False)
    except ImageRejected:
        handle.close()
        raise Http404("This item's file is not an image crowdlab serves.") from None
    response = FileResponse(handle, content_type=kind.content_type, filename=f"item-{item.pk}{kind.extension}")
    # FileResponse writes "inline; filename=..." for a filename without as_attachment.
    response["X-Content-Type-Options"] = "nosniff"
    # Opened on its own, the file gets a document with no rights at all.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# ---------------------------------------------------------------------------- requesters


def _require_requester(request: HttpRequest) -> None:
    if not is_requester(request.user):
        raise PermissionDenied("Only requesters may create projects.")


@login_required
@require_http_methods(["GET", "POST"])
def project_new(request: HttpRequest) -> HttpResponse:
    _require_requester(request)
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        fields = dict(form.cleaned_data)
        try:
            project = project_create(
                owner=signed_in(request.user), name=fields.pop("name"), classes=fields.pop("classes"), **fields
            )
        except ValidationError as error:
            _form_errors_from(form, error)
        else:
            messages.success(request, f"Project “{project.name}” created. Upload items next.")
            return redirect("front:project", project_id=project.pk)
    return render(request, "front/project_form.html", {"form": form, "project": None})


@login_required
@require_http_methods(["GET", "POST"])
def project_edit(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    form = ProjectForm(request.POST or None, initial=ProjectForm.initial_for(project))
    if request.method == "POST" and form.is_valid():
        try:
            project_update(project=project, **form.cleaned_data)
        except ValidationError as error:
            _form_errors_from(form, error)
        else:
            messages.success(request, "Project saved.")
            return redirect("front:project", project_id=project.pk)
    return render(request, "front/project_form.html", {"form": form, "project": project})


@login_required
@require_GET
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    run = active_run(project_id=project.pk)
    # Why automatic runs wait (a run failed on its data, or was cancelled), and
    # how many new labels arrived since (counted up to the threshold).
    held_by = automatic_runs_held_by(project_id=project.pk) if run is None else None
    held_new = new_annotations_count(project.pk)[0] if held_by is not None else 0
    return render(
        request,
        "front/project.html",
        {
            "project": project,
            "progress": selectors.project_progress(project=project),
            "histogram": selectors.items_by_label_count(project=project),
            "timeline": selectors.annotations_over_time(project=project),
            "active_run": run,
            "latest_run": latest_published_run(project),
            "held_by": held_by,
            "held_new": held_new,
            "members": project_members(project=project),
            "member_form": MemberAddForm(),
            "export_formats": EXPORT_FORMATS,
        },
    )


@login_required
@require_POST
def project_members_edit(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            user = user_get_by_username(username=form.cleaned_data["username"])
            if request.POST.get("action") == "remove":
                membership_remove(project=project, user=user)
                messages.success(request, f"{user} is no longer an annotator of this project.")
            else:
                membership_add(project=project, user=user)
                messages.success(request, f"{user} may now label this project.")
        except ValidationError as error:
            messages.error(request, _validation_message(error))
    else:
        messages.error(request, "username: give the username of an existing account.")
    return redirect("front:project", project_id=project.pk)


@login_required
@require_http_methods(["GET", "POST"])
def project_upload(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    items_form = ItemUploadForm(request.POST or None, request.FILES or None, prefix="items")
    crowd_form = CrowdUploadForm(prefix="crowd")
    import_errors: dict[str, Any] | None = None
    if request.method == "POST" and items_form.is_valid():
        try:
            result = items_import(
                project=project, stream=items_form.cleaned_data["file"], fmt=items_form.cleaned_data["format"]
            )
        except ImportValidationError as error:
            import_errors = error.as_dict()
        else:
            embed_items_on_commit(project.pk)
            messages.success(request, f"Imported {result.created} items.")
            return redirect("front:project", project_id=project.pk)
    return render(
        request,
        "front/upload.html",
        {
            "project": project,
            "items_form": items_form,
            "crowd_form": crowd_form,
            "import_errors": import_errors,
            "which": "items",
        },
        status=400 if import_errors else 200,
    )


@login_required
@require_POST
def project_crowd_import(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    crowd_form = CrowdUploadForm(request.POST, request.FILES, prefix="crowd")
    import_errors: dict[str, Any] | None = None
    if crowd_form.is_valid():
        try:
            result = crowd_import(project=project, stream=crowd_form.cleaned_data["file"])
        except ImportValidationError as error:
            import_errors = error.as_dict()
        else:
            messages.success(
                request,
                f"Imported {result.annotations_created} labels ({result.duplicates_skipped} duplicates skipped), "
                f"{result.items_created} new items, {result.annotators_created} new annotator accounts.",
            )
            return redirect("front:project", project_id=project.pk)
    return render(
        request,
        "front/upload.html",
        {
            "project": project,
            "items_form": ItemUploadForm(prefix="items"),
            "crowd_form": crowd_form,
            "import_errors": import_errors,
            "which": "crowd",
        },
        status=400,
    )


@login_required
@require_POST
def run_now(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    cold = request.POST.get("cold") == "1"
    run = request_run(project=project, trigger=RunTrigger.MANUAL, requested_by=request.user, cold=cold)
    if run is None:
        messages.info(request, "A run is already pending or running; following it below.")
    else:
        messages.success(request, f"Run {run.pk} queued{' (full cold refit)' if cold else ''}.")
    return redirect("front:project", project_id=project.pk)


@login_required
@require_POST
def run_cancel(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    run = InferenceRun.objects.defer("checkpoint").filter(project=project, pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    try:
        run_cancel_service(run=run, cancelled_by=request.user)
    except RunNotActive as finished:
        messages.info(request, str(finished))
    else:
        messages.success(request, f"Run {run.pk} cancelled; the published results stay as they were.")
    return redirect("front:project", project_id=project.pk)


@login_required
@require_GET
def run_status(request: HttpRequest, project_id: int, run_id: int) -> JsonResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    run = InferenceRun.objects.defer("checkpoint").filter(project=project, pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    progress = None
    if run.progress_total:
        progress = min(1.0, run.progress_epoch / run.progress_total)
    elif run.status == RunStatus.PUBLISHED:
        progress = 1.0
    return JsonResponse(
        {
            "id": run.pk,
            "status": run.status,
            "status_display": run.get_status_display(),
            "epoch": run.progress_epoch,
            "total": run.progress_total,
            "progress": progress,
            "error": run.error,
            "finished": run.status not in (RunStatus.PENDING, RunStatus.RUNNING),
            "final_loss": run.final_loss,
        }
    )


def _float_or_none(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


@login_required
@require_GET
def results(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    run = latest_published_run(project)
    form = ResultsFilterForm(request.GET or None, classes=project.class_names)
    page = None
    has_generated = False
    if run is not None:
        filters: dict[str, Any] = {}
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            filters = {
                "label": data.get("label") or None,
                "max_confidence": _float_or_none(data.get("max_confidence")),
                "max_agreement": _float_or_none(data.get("max_agreement")),
                "disagreement": bool(data.get("disagreement")),
                "source": data.get("source") or None,
            }
        rows = selectors.results_table(run=run, **filters)
        page = Paginator(rows, RESULTS_PAGE_SIZE).get_page(request.GET.get("page"))
        # CrowdInG's generated annotations of the page's items (owner/admin only,
        # like this whole page); shown apart from the human counts.
        generated = selectors.generated_by_item(run=run, item_ids=[row.item_id for row in page])
        for row in page:
            row.generated_list = generated.get(row.item_id, [])
        has_generated = run.generated.exists()
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "front/results.html",
        {
            "project": project,
            "run": run,
            "form": form,
            "page": page,
            "query": query.urlencode(),
            "export_formats": EXPORT_FORMATS,
            "classes": project.class_names,
            "has_generated": has_generated,
        },
    )


@login_required
@require_GET
def export(request: HttpRequest, project_id: int, fmt: str) -> StreamingHttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    if fmt not in EXPORT_FORMATS:
        raise Http404(f"{fmt!r} is not an export format; allowed: {', '.join(EXPORT_FORMATS)}.")
    return export_response(project=project, fmt=fmt, generated=request.GET.get("generated") == "1")


# ---------------------------------------------------------------------------- dashboards (owner or admin)


def _heatmap(names: list[str], matrix: list[list[float]] | None, *, title: str) -> dict[str, Any] | None:
    if not matrix:
        return None
    return {"classes": names, "matrix": matrix, "title": title}


@login_required
@require_GET
def dashboard(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    sort = request.GET.get("sort", "-n_annotations")
    try:
        rows = selectors.annotator_table(project=project, sort=sort)
    except ValueError as error:
        messages.error(request, str(error))
        sort = "-n_annotations"
        rows = selectors.annotator_table(project=project, sort=sort)
    run = latest_published_run(project)
    common = selectors.common_confusion(project=project, run=run) if run is not None else None
    return render(
        request,
        "front/dashboard.html",
        {
            "project": project,
            "rows": rows,
            "sort": sort,
            "run": run,
            "common": common,
            "common_heatmap": _heatmap(
                project.class_names,
                common.matrix if common else None,
                title="Common confusion (rows: true class, columns: given label)",
            ),
            "history": selectors.run_history(project=project),
            "columns": [
                ("username", "Annotator"),
                ("n_annotations", "Labels given"),
                ("learned_accuracy", "Learned accuracy"),
                ("agreement", "Agreement with aggregate"),
                ("mean_omega", "Mean ω"),
                ("gold_accuracy", "Gold accuracy"),
            ],
        },
    )


@login_required
@require_GET
def dashboard_annotator(request: HttpRequest, project_id: int, annotator_id: int) -> HttpResponse:
    project = project_get_for_owner(user=request.user, project_id=project_id)
    annotator = selectors.dashboard_annotator_get(project=project, annotator_id=annotator_id)
    if annotator is None:
        raise Http404("This person has not labelled in this project.")
    run = latest_published_run(project)
    confusion = confusions_for_run(run=run).filter(annotator=annotator).first() if run is not None else None
    names = project.class_names
    return render(
        request,
        "front/dashboard_annotator.html",
        {
            "project": project,
            "annotator": annotator,
            "run": run,
            "confusion": confusion,
            "learned_heatmap": _heatmap(
                names,
                confusion.matrix if confusion else None,
                title="Learned confusion (rows: true class, columns: given label)",
            ),
            "raw_counts": selectors.raw_counts(project=project, annotator=annotator, run=run) if run else None,
            "classes": names,
            "omega_histogram": selectors.omega_histogram(confusion.omegas if confusion else None),
            "has_omegas": bool(confusion and confusion.omegas),
            "recent": selectors.recent_labels(project=project, annotator=annotator, run=run),
        },
    )
