"""Template helpers: markdown rendering, role names, percentages."""

from __future__ import annotations

from typing import Any

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

from crowdlab.projects.roles import is_admin, is_requester

register = template.Library()


@register.filter(name="markdown")
def render_markdown(text: str | None) -> SafeString:
    """Requester-written markdown → HTML, sanitised with nh3 (no scripts, no
    event handlers, no javascript: links) before it reaches annotators."""
    html = markdown_lib.markdown(text or "", extensions=["extra", "sane_lists"])
    return mark_safe(nh3.clean(html, link_rel="noopener noreferrer nofollow"))


@register.simple_tag
def role_of(user: Any) -> str:
    if is_admin(user):
        return "admin"
    if is_requester(user):
        return "requester"
    return "annotator"


def _as_float(value: Any) -> float | None:
    """A number, or None for what is not one. Templates hand a missing dict key (a run
    without metrics yet: pending, running, failed) to filters as '' (the
    string_if_invalid), not None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@register.filter
def percent(value: Any, digits: int = 0) -> str:
    number_ = _as_float(value)
    return "—" if number_ is None else f"{100 * number_:.{int(digits)}f} %"


@register.filter
def number(value: Any, digits: int = 2) -> str:
    number_ = _as_float(value)
    return "—" if number_ is None else f"{number_:.{int(digits)}f}"


@register.filter
def index(sequence: Any, position: int) -> Any:
    try:
        return sequence[position]
    except (IndexError, KeyError, TypeError):
        return None


@register.simple_tag
def sort_link(current: str, column: str) -> str:
    """The ``sort`` value a column header links to: descending first, then toggles."""
    if current == f"-{column}":
        return column
    return f"-{column}"
