"""Database helpers shared by the apps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection
from django.db.models import Field


def prepared_cursor() -> Any:
    """A cursor whose statements PostgreSQL plans once per connection.

    Why: the annotator hot path runs a few large CTE statements thousands of
    times a second, and planning them cost ~4x their execution (measured:
    ~1.4 ms vs ~0.3 ms of PostgreSQL CPU per submit). psycopg 3's server-side
    binding cursor prepares a statement after ``prepare_threshold`` (5)
    executions on a connection and then reuses the plan. The rest of the code
    base keeps Django's client-side binding cursor (its SQL relies on it).

    The cursor is wrapped like ``connection.cursor()`` (Django's error
    translation and query logging, so ``CaptureQueriesContext`` sees it) and
    joins the current transaction.
    Django disables psycopg's preparing by default; ``settings`` turns it on
    (``DATABASE_PREPARE_THRESHOLD``, default 5; 0 turns it off, as a
    transaction-mode pgbouncer in front of PostgreSQL would need).
    """
    import psycopg

    connection.ensure_connection()
    # _prepare_cursor: the private step of Django's PostgreSQL backend that
    # wraps a cursor as connection.cursor() does (no public API takes ours).
    return connection._prepare_cursor(psycopg.Cursor(connection.connection))  # type: ignore[attr-defined]


def select_columns(alias: str, fields: Iterable[Field[Any, Any]]) -> str:
    """``alias."col1", alias."col2", ...``: the quoted columns of ``fields`` for a
    raw SELECT whose rows ``model_from_row`` turns back into instances."""
    selected: list[str] = []
    for field in fields:
        # Only concrete fields have a column (Field.column is None for the others);
        # a raw SELECT of a non-concrete field is a programming error, not bad input.
        if field.column is None:
            raise ValueError(f"{field!r} has no database column to select")
        selected.append(f"{alias}.{connection.ops.quote_name(field.column)}")
    return ", ".join(selected)


def model_from_row(model: Any, fields: list[Any], values: Any) -> Any:
    """An instance of ``model`` from a raw cursor row of ``fields``' columns, with
    each value converted as the ORM would (``from_db_value``: e.g. jsonb comes
    back from a raw cursor as text)."""
    converted = [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, values, strict=True)
    ]
    return model.from_db(connection.alias, [field.attname for field in fields], converted)


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table``'s ``columns`` in the current transaction.

    Why: several times faster than ``bulk_create`` at 100k rows (imports,
    publishing a run). Errors are translated like the ORM's (IntegrityError…).
    """
    quote = connection.ops.quote_name
    sql = f"COPY {quote(table)} ({', '.join(quote(column) for column in columns)}) FROM STDIN"
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)
