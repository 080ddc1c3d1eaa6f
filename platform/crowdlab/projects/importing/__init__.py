"""Bulk import of items (the crowd import, built on these parts, is
``crowdlab.labelling.importing``).

Imports are all-or-nothing: every row is validated first (with a handful
of set-based queries, never one per row), and only a clean upload is written,
in one transaction. A rejected upload raises ``ImportValidationError`` whose
``as_dict()`` is the 400 body: row numbers and reasons naming the field and
the allowed values, capped at ``MAX_REPORTED_ERRORS`` plus the total count.

Row numbers are 1-based and count *data rows* only: a CSV header line is not a
row, the first element of a JSON array is row 1, and blank JSONL lines are
skipped without being counted.

One concern per module, each depending only on those above it:

* ``errors``: ``RowError``, ``ImportValidationError`` (the 400 body) and the collector;
* ``parsing``: upload bytes (CSV, JSON array, JSONL) to numbered raw rows;
* ``rows``: the rules of one item row, shared with the API's serializers;
* ``services``: the writes (bulk item import, one-file upload).

The names callers use are re-exported here.
"""

from __future__ import annotations

from .errors import (
    MAX_REPORTED_ERRORS,
    ROW_NUMBERS_NOTE,
    ImportValidationError,
    RowError,
)
from .parsing import IMPORT_FORMATS, ImportFormat, parse_upload
from .services import (
    BATCH_SIZE,
    MAX_ITEMS_PER_REQUEST,
    ImportResult,
    item_create_with_file,
    items_import,
)

__all__ = [
    "BATCH_SIZE",
    "IMPORT_FORMATS",
    "MAX_ITEMS_PER_REQUEST",
    "MAX_REPORTED_ERRORS",
    "ROW_NUMBERS_NOTE",
    "ImportFormat",
    "ImportResult",
    "ImportValidationError",
    "RowError",
    "item_create_with_file",
    "items_import",
    "parse_upload",
]
