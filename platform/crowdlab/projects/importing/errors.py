"""What a rejected import says: row errors, the 400 body, and the collector that caps them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_REPORTED_ERRORS = 100
ROW_NUMBERS_NOTE = (
    "Row numbers are 1-based and count data rows only (a CSV header is not a row; blank JSONL lines are skipped)."
)

# --------------------------------------------------------------------------- errors and results


@dataclass(frozen=True)
class RowError:
    row: int | None  # None: the upload as a whole (unreadable file, too many rows)
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


class ImportValidationError(ValueError):
    """The upload was rejected as a whole; nothing was written."""

    def __init__(self, errors: list[RowError], *, total: int | None = None) -> None:
        self.errors = errors[:MAX_REPORTED_ERRORS]
        self.total = total if total is not None else len(errors)
        super().__init__(self.summary())

    def summary(self) -> str:
        rows = {error.row for error in self.errors if error.row is not None}
        if rows:
            return f"Nothing was imported: {self.total} error(s) in the upload. {ROW_NUMBERS_NOTE}"
        return f"Nothing was imported: {self.errors[0].message if self.errors else 'the upload is invalid.'}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "detail": self.summary(),
            "error_count": self.total,
            "errors": [error.as_dict() for error in self.errors],
            "errors_truncated": self.total > len(self.errors),
        }


class ErrorCollector:
    """Keeps the first errors and counts all of them."""

    def __init__(self) -> None:
        self.errors: list[RowError] = []
        self.total = 0

    def add(self, row: int | None, field_name: str | None, message: str) -> None:
        self.total += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(row, field_name, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise ImportValidationError(self.errors, total=self.total)
