"""Bulk item import services (projects.importing); the crowd import is tests/platform/labelling/test_importing.py."""

from __future__ import annotations

from typing import Any

import pytest

from crowdlab.projects.importing import (
    MAX_REPORTED_ERRORS,
    ImportValidationError,
    items_import,
)
from crowdlab.projects.models import Item, ItemKind, Project

pytestmark = pytest.mark.django_db


def _errors(excinfo: pytest.ExceptionInfo[ImportValidationError]) -> list[dict[str, Any]]:
    return excinfo.value.as_dict()["errors"]


# --------------------------------------------------------------------------- items: happy paths


def test_json_rows_create_items_with_inferred_kinds(project: Project) -> None:
    rows = [
        {"external_id": "t1", "text": "a cat", "gold": "cat"},
        {"id": "i1", "image_url": "https://example.org/i1.jpg"},
        {"item": "s1", "audio_url": "https://example.org/s1.mp3"},
        {"external_id": "u1", "url": "https://example.org/u1.wav?x=1"},
        {"external_id": "d1", "data": {"question": "which?"}},
        {"external_id": 42, "features": [0.5, 1, -2.0]},
    ]
    result = items_import(project=project, rows=rows)
    assert result.created == 6
    stored = {
        item.external_id: item
        for item in Item.objects.filter(project=project, external_id__in=["t1", "i1", "s1", "u1", "d1", "42"])
    }
    assert stored["t1"].kind == ItemKind.TEXT and stored["t1"].gold_label == "cat"
    assert stored["i1"].kind == ItemKind.IMAGE and stored["i1"].url == "https://example.org/i1.jpg"
    assert stored["s1"].kind == ItemKind.AUDIO
    assert stored["u1"].kind == ItemKind.AUDIO
    assert stored["d1"].kind == ItemKind.JSON and stored["d1"].data == {"question": "which?"}
    assert stored["42"].features == [0.5, 1.0, -2.0]
    assert result.kinds == {"audio": 2, "image": 1, "json": 2, "text": 1}


def test_jsonl_stream(project: Project) -> None:
    body = b'{"external_id": "j1", "text": "one"}\n\n{"external_id": "j2", "text": "two", "gold": "dog"}\n'
    result = items_import(project=project, stream=body, fmt="jsonl")
    assert result.created == 2
    assert Item.objects.get(project=project, external_id="j2").gold_label == "dog"


def test_csv_extra_columns_become_data_and_f_columns_features(project: Project) -> None:
    body = (
        "\ufeffexternal_id,text,gold,f0,f1,f2,source,lang\nc1,hello,cat,0.1,0.2,0.3,web,en\nc2,bye,,1,2,3,,fr\n"
    ).encode()
    result = items_import(project=project, stream=body, fmt="csv")
    assert result.created == 2
    c1 = Item.objects.get(project=project, external_id="c1")
    c2 = Item.objects.get(project=project, external_id="c2")
    assert c1.features == [0.1, 0.2, 0.3] and c1.data == {"source": "web", "lang": "en"} and c1.gold_label == "cat"
    assert c2.features == [1.0, 2.0, 3.0] and c2.data == {"lang": "fr"} and c2.gold_label is None


def test_csv_features_as_json_list(project: Project) -> None:
    body = 'id,features\nv1,"[1, 2]"\nv2,"[3.5, 4]"\n'
    assert items_import(project=project, stream=body, fmt="csv").created == 2
    assert Item.objects.get(project=project, external_id="v2").features == [3.5, 4.0]


# --------------------------------------------------------------------------- items: all or nothing


def test_one_bad_row_imports_nothing_and_names_row_field_and_allowed_values(project: Project) -> None:
    before = Item.objects.filter(project=project).count()
    rows = [{"external_id": f"ok{n}", "text": "fine"} for n in range(10)]
    rows.insert(3, {"external_id": "bad", "text": "x", "gold": "horse"})
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, rows=rows)
    errors = _errors(excinfo)
    assert errors == [
        {"row": 4, "field": "gold", "message": "'horse' is not a class of this project; allowed: cat, dog, bird."}
    ]
    assert Item.objects.filter(project=project).count() == before


def test_csv_row_numbers_count_data_rows(project: Project) -> None:
    body = "id,text,kind\nr1,a,text\nr2,b,video\nr3,,\n"
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, stream=body, fmt="csv")
    by_row = {error["row"]: error for error in _errors(excinfo)}
    assert by_row[2]["field"] == "kind" and "allowed: text, image, audio, json" in by_row[2]["message"]
    assert by_row[3]["field"] is None and "has no content" in by_row[3]["message"]
    assert 1 not in by_row
    assert not Item.objects.filter(project=project, external_id__startswith="r").exists()


@pytest.mark.parametrize(
    ("row", "field", "fragment"),
    [
        ({"text": "no id"}, "external_id", "is required"),
        ({"id": "x", "text": "t", "colour": "red"}, "colour", "allowed:"),
        ({"id": "x", "image_url": "ftp://example.org/a.png"}, "image_url", "not an http(s) URL"),
        (
            {"id": "x", "image_url": "https://e.org/a.png", "audio_url": "https://e.org/a.mp3"},
            "audio_url",
            "only one of",
        ),
        ({"id": "x", "features": [1, "two"]}, "features", "only numbers"),
        ({"id": "x", "features": []}, "features", "non-empty list"),
        ({"id": "x", "data": [1, 2]}, "data", "JSON object"),
        ({"id": "x", "kind": "image", "text": "t"}, "kind", "needs a URL"),
        ({"id": "x", "text": "nul\x00here"}, "text", "NUL"),
        ({"id": "x", "text": "lone \ud800 surrogate"}, "text", "surrogate"),
        ({"id": "x", "data": {"k": ["\ud800"]}}, "data", "surrogate"),
        ({"id": "x", "features": [10**400]}, "features", "too large"),
        ("not an object", None, "expected an object"),
    ],
)
def test_bad_rows_name_the_field(project: Project, row: Any, field: str | None, fragment: str) -> None:
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, rows=[{"id": "fine", "text": "ok"}, row])
    errors = _errors(excinfo)
    assert errors[0]["row"] == 2
    assert errors[0]["field"] == field
    assert fragment in errors[0]["message"]
    assert not Item.objects.filter(project=project, external_id="fine").exists()


def test_duplicate_ids_in_upload_and_in_project(project: Project) -> None:
    rows = [
        {"external_id": "n1", "text": "x"},
        {"external_id": "a0", "text": "exists already"},  # the fixture's items are a0..a4
        {"external_id": "n1", "text": "again"},
    ]
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, rows=rows)
    errors = {error["row"]: error["message"] for error in _errors(excinfo)}
    assert errors == {3: "'n1' repeats row 1; external ids are unique.", 2: "'a0' already exists in this project."}
    assert not Item.objects.filter(project=project, external_id="n1").exists()


def test_feature_length_must_match_the_project(project: Project) -> None:
    items_import(project=project, rows=[{"id": "f1", "features": [1, 2, 3]}])
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, rows=[{"id": "f2", "features": [1, 2]}])
    assert "this project's feature vectors have 3" in _errors(excinfo)[0]["message"]


def test_error_list_is_capped_with_total(project: Project) -> None:
    rows = [{"id": f"x{n}", "text": "t", "gold": "nope"} for n in range(250)]
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, rows=rows)
    body = excinfo.value.as_dict()
    assert body["error_count"] == 250
    assert len(body["errors"]) == MAX_REPORTED_ERRORS
    assert body["errors_truncated"] is True


def test_invalid_json_and_unknown_format(project: Project) -> None:
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, stream=b"[{", fmt="json")
    assert "invalid JSON" in excinfo.value.as_dict()["detail"]
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, stream=b"", fmt="xml")
    assert "allowed: json, jsonl, csv" in _errors(excinfo)[0]["message"]
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, stream=b'{"id": "a", "text": "t"}\n{oops\n', fmt="jsonl")
    assert _errors(excinfo)[0]["row"] == 2


def test_large_import_is_set_based(project: Project, django_assert_max_num_queries: Any) -> None:
    rows = [{"external_id": f"big{n}", "text": f"t{n}", "gold": "cat" if n % 2 else None} for n in range(20_000)]
    # Few queries whatever the row count: no per-row lookups or inserts.
    with django_assert_max_num_queries(15):
        result = items_import(project=project, rows=rows)
    assert result.created == 20_000
    assert Item.objects.filter(project=project, external_id__startswith="big").count() == 20_000


def test_nan_in_a_jsonl_row_is_a_row_error(project: Project) -> None:
    with pytest.raises(ImportValidationError) as excinfo:
        items_import(project=project, stream=b'{"id": "n1", "data": {"x": NaN}}\n', fmt="jsonl")
    assert _errors(excinfo)[0]["row"] == 1 and "NaN is not a JSON value" in _errors(excinfo)[0]["message"]


def test_jsonl_lines_end_at_newlines_only(project: Project) -> None:
    # U+2028, U+2029 and U+0085 are allowed unescaped inside JSON strings;
    # str.splitlines cut the line there and the row was reported as invalid JSON.
    body = '{"id": "sep", "text": "one\u2028two\x85three\u2029four"}\r\n\n{"id": "next", "text": "x"}\n'.encode()
    result = items_import(project=project, stream=body, fmt="jsonl")
    assert result.created == 2
    assert Item.objects.get(project=project, external_id="sep").text == "one\u2028two\x85three\u2029four"
