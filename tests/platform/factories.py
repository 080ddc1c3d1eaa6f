"""factory-boy factories for the platform apps.

Import them with ``from tests.platform.factories import ...`` (the repository root
is on ``pythonpath``) or through the fixtures in ``tests/platform/conftest.py``.
"""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from crowdlab.labelling.models import Annotation, Assignment, AssignmentStatus
from crowdlab.projects.models import Item, ItemKind, Membership, Project

DEFAULT_PASSWORD = "crowdlab-pass-123"

DEFAULT_CLASSES = [
    {"name": "cat", "key": "1"},
    {"name": "dog", "key": "2"},
    {"name": "bird", "key": "3"},
]


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def _save_password(obj, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            obj.save(update_fields=["password"])


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    instructions = "Pick the animal shown."
    classes = factory.LazyFunction(lambda: [dict(entry) for entry in DEFAULT_CLASSES])
    k = 3


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"item-{n}")
    kind = ItemKind.TEXT
    text = factory.LazyAttribute(lambda item: f"Text of {item.external_id}")


class AssignmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Assignment

    item = factory.SubFactory(ItemFactory)
    project = factory.LazyAttribute(lambda a: a.item.project)
    annotator = factory.SubFactory(UserFactory)
    status = AssignmentStatus.ACTIVE
    expires_at = factory.LazyFunction(
        lambda: (
            __import__("django.utils.timezone", fromlist=["now"]).now() + __import__("datetime").timedelta(minutes=10)
        )
    )


class AnnotationFactory(factory.django.DjangoModelFactory):
    """A stored annotation; keeps ``Item.n_annotations`` in step like the services do."""

    class Meta:
        model = Annotation

    item = factory.SubFactory(ItemFactory)
    project = factory.LazyAttribute(lambda a: a.item.project)
    annotator = factory.SubFactory(UserFactory)
    label = factory.LazyAttribute(lambda a: a.item.project.class_names[0])

    @classmethod
    def _create(cls, model_class: type[Annotation], *args: object, **kwargs: object) -> Annotation:
        from django.db.models import F

        annotation = super()._create(model_class, *args, **kwargs)
        Item.objects.filter(pk=annotation.item_id).update(n_annotations=F("n_annotations") + 1)
        annotation.item.refresh_from_db(fields=["n_annotations"])
        return annotation


def publish_with_generated(project: Project, generated: list[tuple[Item, Any, str, float]]) -> Any:
    """A published run (through ``run_publish``, COPY included) with the given
    generated rows (item, annotator, label, probability) and nothing else."""
    from crowdlab.results.models import InferenceRun, RunStatus
    from crowdlab.results.services import GeneratedRow, RunResults, run_create, run_publish

    run = run_create(project=project)
    assert run is not None
    InferenceRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, worker="test/1")
    results = RunResults(
        snapshot_annotation_id=0,
        n_items=0,
        n_annotations=0,
        n_annotators=0,
        labels=[],
        confusions=[],
        common_confusion=None,
        checkpoint=None,
        generated=[
            GeneratedRow(item_id=i.pk, annotator_id=u.pk, label=lab, probability=p) for i, u, lab, p in generated
        ],
    )
    assert run_publish(run_id=run.pk, worker="test/1", results=results) == RunStatus.PUBLISHED
    run.refresh_from_db()
    return run


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (4, 3)) -> bytes:
    """A real, tiny image in Pillow format ``fmt`` (PNG, JPEG, GIF, WEBP, BMP, ...)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


# What a stored-XSS upload carries: an HTML page and an SVG with script.
HTML_PAGE = b"<!doctype html><html><body><script>fetch('/api/auth/token/')</script></body></html>"
SVG_WITH_SCRIPT = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>"
)
