"""crowdlab.jsonlimits: the depth check that runs before any user JSON is decoded."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdlab import jsonlimits


def _nested(levels: int, leaf: str = "1") -> str:
    return '{"k":' * levels + leaf + "}" * levels


@pytest.mark.parametrize("kind", [str, bytes])
def test_a_hundred_thousand_levels_are_refused_before_decoding(kind: type) -> None:
    document = "[" * 100_000 + "]" * 100_000
    started = time.perf_counter()
    with pytest.raises(jsonlimits.JSONTooDeep) as excinfo:
        jsonlimits.loads(document if kind is str else document.encode())
    # json.loads itself raises RecursionError on this document (a 500 upstream).
    with pytest.raises(RecursionError):
        json.loads(document)
    assert time.perf_counter() - started < 2
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert (error.limit, error.line, error.column, error.index) == (64, 1, 65, 0)
    assert "64" in str(error) and "JSON_MAX_DEPTH" in str(error)


def test_the_limit_itself_is_allowed_and_one_more_is_not() -> None:
    assert jsonlimits.loads(_nested(64)) is not None
    with pytest.raises(jsonlimits.JSONTooDeep):
        jsonlimits.loads(_nested(65))
    with pytest.raises(jsonlimits.JSONTooDeep):
        jsonlimits.loads(_nested(4), limit=3)


def test_brackets_inside_strings_do_not_nest() -> None:
    document = json.dumps({"text": "[" * 500 + "{" * 500, "quote": 'a \\" [[[ "', "list": ["]]]", "[[["]})
    assert jsonlimits.loads(document)["text"].startswith("[[[")


def test_the_error_names_line_column_and_top_level_element() -> None:
    rows = [{"id": "a"}, {"id": "b"}, {"id": "c", "data": json.loads(_nested(70))}]
    document = json.dumps(rows, indent=1)
    with pytest.raises(jsonlimits.JSONTooDeep) as excinfo:
        jsonlimits.loads(document)
    assert excinfo.value.index == 2  # the third row
    line = document.splitlines()[excinfo.value.line - 1]
    assert line[excinfo.value.column - 1] == "{"
    with pytest.raises(jsonlimits.JSONTooDeep) as excinfo:
        jsonlimits.loads(_nested(70))
    assert excinfo.value.index is None  # not an array: no row to name


def test_nan_infinity_and_bad_bytes_are_value_errors() -> None:
    for document in ("[NaN]", "[Infinity]", b'["caf\xe9"]', "[1,", ""):
        with pytest.raises(ValueError):
            jsonlimits.loads(document)


def test_decoded_values_are_checked_without_recursion() -> None:
    value: Any = 1
    for _ in range(100_000):  # deeper than Python's recursion limit
        value = [value]
    assert jsonlimits.nesting_exceeds(value, 64)
    assert not jsonlimits.nesting_exceeds({"a": [{"b": []}]}, 4)
    assert jsonlimits.nesting_exceeds({"a": [{"b": [1]}]}, 3)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (current.values() if isinstance(current, dict) else current))
    return deepest


_TRICKY_TEXT = st.text(alphabet='[]{}"\\\\ab,:', max_size=8)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TRICKY_TEXT, children, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=_VALUES, limit=st.integers(min_value=1, max_value=8), ascii_only=st.booleans())
def test_the_scan_measures_exactly_what_the_decoder_builds(value: Any, limit: int, ascii_only: bool) -> None:
    # Strings full of brackets, quotes and backslashes must not change the count.
    document = json.dumps(value, ensure_ascii=ascii_only)
    expected = _depth(value) > limit
    assert jsonlimits.depth_exceeds(document, limit) is expected
    assert jsonlimits.depth_exceeds(document.encode(), limit) is expected
