"""How ``labelling`` tells the apps above it that annotations were stored.

Dependencies run one way (projects ← labelling ← results ← live), so
``labelling`` never imports ``live``; yet every stored label may have to start
an inference run. ``live`` therefore registers one ``AnnotationListener`` here
from its ``AppConfig.ready()``, and every writer of annotations (the submit
services, the API's token fast path, the crowd import) calls it through this
module.

A module-level slot rather than a Django signal: the one-statement submit
carries the listener's own SQL column (``due_sql``, "is a run due?") so that
the annotator hot path pays no second round trip, and a signal cannot add a
column to a statement. Calling the listener is one attribute read, no query.
Without a listener (nothing registered) a stored label tells nobody.
"""

from __future__ import annotations

from typing import Protocol


class AnnotationListener(Protocol):
    """What an app above ``labelling`` does when annotations are stored."""

    def due_sql(self, *, inserted_id: str) -> str:
        """A boolean SQL expression for the one-statement submit: TRUE when
        ``annotations_stored`` has work to do. ``inserted_id`` is the SQL of the
        inserted annotation's id (NULL when nothing was inserted); the
        statement's parameter ``%(project)s`` is the project's id."""
        ...

    def annotations_stored(self, *, project_id: int) -> None:
        """Annotations of ``project_id`` were written in the current
        transaction. Called inside it: defer the work to after commit."""
        ...

    def __hash__(self) -> int:
        """Hashable: the submit statement built around a listener is cached per listener."""
        ...


_listener: AnnotationListener | None = None


def set_listener(listener: AnnotationListener | None) -> AnnotationListener | None:
    """Register ``listener`` (``None``: nobody) and return the one it replaces."""
    global _listener
    previous, _listener = _listener, listener
    return previous


def listener() -> AnnotationListener | None:
    """The registered listener, if any."""
    return _listener


def due_sql(*, inserted_id: str, listener: AnnotationListener | None = None) -> str:
    """``listener``'s (default: the registered one's) "work to do?" column, or
    FALSE when nobody listens."""
    listener = listener if listener is not None else _listener
    return listener.due_sql(inserted_id=inserted_id) if listener is not None else "FALSE"


def annotations_stored(*, project_id: int) -> None:
    """Tell the listener that annotations of ``project_id`` were written."""
    if _listener is not None:
        _listener.annotations_stored(project_id=project_id)
