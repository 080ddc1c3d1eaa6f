"""Forms of the web UI. They parse and validate input; writes go through services."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from crowdlab.projects.importing import IMPORT_FORMATS
from crowdlab.projects.models import InferenceModel, Project, validate_classes

# Says exactly what the labelling page does (front.views.label_keys, static/js/label.js).
CLASSES_HELP = (
    "One class per line, in order, optionally followed by a comma and its own keyboard key, e.g. “cat, c”. "
    "A class with its own key is labelled with that key only. A class without one gets its position "
    "digit (1 for the first class … 9 for the ninth) unless another class has that digit as its own key; "
    "past the ninth, a class without a key is labelled by clicking. Keys ignore case; S, U and ? are "
    "reserved (skip, undo, the list of shortcuts)."
)


def classes_to_text(classes: list[dict[str, Any]]) -> str:
    return "\n".join(f"{c['name']}, {c['key']}" if c.get("key") else c["name"] for c in classes)


def parse_classes(text: str) -> list[dict[str, Any]]:
    """``name[, key]`` per line → ``[{"name": ..., "key": ...}]``; blank lines ignored.

    Errors name the line the requester typed ("line 3"), never the position
    in the stored list (``classes[2]``, which skips blank lines and counts from 0).
    """
    classes: list[dict[str, Any]] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, _, key = line.rpartition(",") if "," in line else (line, "", "")
        name, key = name.strip(), key.strip()
        if not name:
            raise forms.ValidationError(f"line {number}: the class name is empty.")
        if len(key) > 1:
            raise forms.ValidationError(f"line {number}: the key {key!r} must be a single character.")
        classes.append({"name": name, "key": key or None})
        lines.append(number)
    if len(classes) < 2:
        raise forms.ValidationError("give at least 2 classes, one per line.")

    def where(index: int, field: str | None) -> str:
        return f"line {lines[index]}" + {"name": " (class name)", "key": " (key)"}.get(field or "", "")

    try:
        validate_classes(classes, where=where)
    except ValidationError as error:
        raise forms.ValidationError(error.messages) from None
    return classes


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=200)
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        required=False,
        max_length=settings.PROJECT_INSTRUCTIONS_MAX_LENGTH,
        help_text="Markdown, shown to annotators.",
    )
    classes = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), help_text=CLASSES_HELP)
    k = forms.IntegerField(min_value=1, max_value=100, initial=3, label="Labels wanted per item (k)")
    model = forms.ChoiceField(choices=InferenceModel.choices, initial=InferenceModel.CONAL, label="Inference model")
    retrain_every_n = forms.IntegerField(min_value=1, initial=50, label="Retrain after N new labels")
    retrain_every_minutes = forms.IntegerField(min_value=0, initial=10, label="…or after T minutes")
    require_confirmation = forms.BooleanField(required=False, label="Annotators confirm each label with Enter")
    lease_seconds = forms.IntegerField(min_value=10, initial=600, label="Lease per item (seconds)")
    is_active = forms.BooleanField(required=False, initial=True, label="Active (hands out tasks)")

    def clean_classes(self) -> list[dict[str, Any]]:
        return parse_classes(self.cleaned_data["classes"])

    @classmethod
    def initial_for(cls, project: Project) -> dict[str, Any]:
        return {
            "name": project.name,
            "instructions": project.instructions,
            "classes": classes_to_text(project.classes),
            "k": project.k,
            "model": project.model,
            "retrain_every_n": project.retrain_every_n,
            "retrain_every_minutes": project.retrain_every_minutes,
            "require_confirmation": project.require_confirmation,
            "lease_seconds": project.lease_seconds,
            "is_active": project.is_active,
        }


FORMAT_CHOICES = [("", "From the file name")] + [(fmt, fmt.upper()) for fmt in IMPORT_FORMATS]


class ItemUploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV (header: external_id,text,image_url,audio_url,gold,f0,f1,…), a JSON array or JSONL."
    )
    format = forms.ChoiceField(choices=FORMAT_CHOICES, required=False)

    def clean(self) -> dict[str, Any]:
        super().clean()
        # Form.clean returns cleaned_data, but its signature allows a subclass's None.
        cleaned = self.cleaned_data
        upload = cleaned.get("file")
        if upload is not None and not cleaned.get("format"):
            name = (upload.name or "").lower()
            for fmt, suffixes in (("jsonl", (".jsonl", ".ndjson")), ("json", (".json",)), ("csv", (".csv",))):
                if name.endswith(suffixes):
                    cleaned["format"] = fmt
                    break
            else:
                raise forms.ValidationError(
                    {"format": f"cannot tell the format of {upload.name!r}; choose one of {', '.join(IMPORT_FORMATS)}."}
                )
        return cleaned


class CrowdUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV with columns item,annotator,label (or crowd-kit's task,worker,label).")


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)


class ResultsFilterForm(forms.Form):
    label = forms.ChoiceField(required=False)
    max_confidence = forms.FloatField(required=False, min_value=0, max_value=1, label="Confidence ≤")
    disagreement = forms.BooleanField(required=False, label="Annotators disagree")
    max_agreement = forms.FloatField(required=False, min_value=0, max_value=1, label="Agreement ≤")
    source = forms.ChoiceField(required=False, choices=[("", "All"), ("crowd", "Crowd"), ("predicted", "Predicted")])

    def __init__(self, *args: Any, classes: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # self.fields holds copies of the declared fields: "label" is the ChoiceField above.
        label_field = cast(forms.ChoiceField, self.fields["label"])
        label_field.choices = [("", "All labels")] + [(name, name) for name in classes]
