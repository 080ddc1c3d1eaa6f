"""Writes to projects and memberships (keyword-only, typed, atomic)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .models import InferenceModel, Membership, Project, validate_classes

# Fields a requester may set on create/update; the rest (owner, counters,
# timestamps) are managed here.
EDITABLE_FIELDS = (
    "name",
    "instructions",
    "classes",
    "k",
    "model",
    "retrain_every_n",
    "retrain_every_minutes",
    "require_confirmation",
    "lease_seconds",
    "is_active",
)


def _validate_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError(
            {name: f"unknown field; allowed: {', '.join(EDITABLE_FIELDS)}" for name in sorted(unknown)}
        )
    if "classes" in fields:
        try:
            validate_classes(fields["classes"])
        except ValidationError as error:
            raise ValidationError({"classes": error.messages}) from None
    if "model" in fields and fields["model"] not in InferenceModel.values:
        raise ValidationError({"model": f"must be one of: {', '.join(InferenceModel.values)}."})
    if "k" in fields and (not isinstance(fields["k"], int) or isinstance(fields["k"], bool) or fields["k"] < 1):
        raise ValidationError({"k": "must be an integer ≥ 1."})
    if "name" in fields and not str(fields["name"]).strip():
        raise ValidationError({"name": "must not be empty."})
    limit = settings.PROJECT_INSTRUCTIONS_MAX_LENGTH
    if "instructions" in fields and len(str(fields["instructions"] or "")) > limit:
        # Rendered as markdown on every labelling page: the size is bounded.
        raise ValidationError(
            {
                "instructions": f"is {len(fields['instructions']):,} characters long; at most {limit:,} are allowed "
                "(PROJECT_INSTRUCTIONS_MAX_LENGTH)."
            }
        )


@transaction.atomic
def project_create(*, owner: User, name: str, classes: list[dict[str, Any]], **fields: Any) -> Project:
    """Create a project owned by ``owner``; classes are normalised (names stripped, empty keys → None)."""
    fields = {"name": name, "classes": classes, **fields}
    _validate_fields(fields)
    fields["classes"] = _normalise_classes(fields["classes"])
    if Project.objects.filter(owner=owner, name=fields["name"]).exists():
        raise ValidationError({"name": f"you already have a project named {fields['name']!r}."})
    project = Project(owner=owner, **fields)
    project.full_clean()
    try:
        with transaction.atomic():
            project.save()
    except IntegrityError:
        raise ValidationError({"name": f"you already have a project named {fields['name']!r}."}) from None
    return project


@transaction.atomic
def project_update(*, project: Project, **fields: Any) -> Project:
    """Change editable fields. Class names that already carry annotations cannot be dropped."""
    _validate_fields(fields)
    if "classes" in fields:
        fields["classes"] = _normalise_classes(fields["classes"])
        new_names = {entry["name"] for entry in fields["classes"]}
        used = set(project.annotations.values_list("label", flat=True).distinct())
        missing = sorted(used - new_names)
        if missing:
            raise ValidationError(
                {"classes": f"classes {missing} already have annotations and cannot be removed or renamed."}
            )
    if (
        "name" in fields
        and fields["name"] != project.name
        and Project.objects.filter(owner_id=project.owner_id, name=fields["name"]).exclude(pk=project.pk).exists()
    ):
        raise ValidationError({"name": f"the owner already has a project named {fields['name']!r}."})
    for name, value in fields.items():
        setattr(project, name, value)
    project.full_clean()
    project.save()
    return project


@transaction.atomic
def project_delete(*, project: Project) -> None:
    project.delete()


def _normalise_classes(classes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": entry["name"].strip(), "key": entry.get("key") or None} for entry in classes]


@transaction.atomic
def membership_add(*, project: Project, user: User) -> Membership:
    """Make ``user`` an annotator of ``project``; adding twice is a no-op."""
    membership, _ = Membership.objects.get_or_create(project=project, user=user)
    return membership
