"""The templates and scripts stay within the Content-Security-Policy.

The policy allows only the site's own script and style files: an inline
``<script>``, a ``style=""`` attribute, an ``on…=`` handler or a
``javascript:`` URL would be refused by the browser (the browser tests catch
that on the pages they visit; this catches it on every template). ``json_script``
data blocks are fine: they are data, never executed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = sorted((REPO / "templates").rglob("*.html"))
SCRIPTS = sorted((REPO / "static" / "js").glob("*.js"))

# What the browser would refuse under script-src 'self' / style-src 'self'.
FORBIDDEN_IN_TEMPLATES = {
    "inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE),
    "<style> element": re.compile(r"<style\b", re.IGNORECASE),
    "style attribute": re.compile(r"\sstyle\s*=", re.IGNORECASE),
    "inline event handler": re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
}
# Comments are not markup: they may talk about what they removed.
COMMENTS = re.compile(r"\{#.*?#\}|\{% comment %\}.*?\{% endcomment %\}|<!--.*?-->", re.DOTALL)
FORBIDDEN_IN_SCRIPTS = {
    "HTML parsing (may carry handlers or style attributes)": re.compile(
        r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML"
    ),
    "style attribute": re.compile(r"setAttribute\(\s*[\"']style"),
    "eval": re.compile(r"\beval\(|new Function\("),
}


def test_there_are_templates_and_scripts_to_check() -> None:
    assert len(TEMPLATES) > 10 and len(SCRIPTS) >= 5


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: str(path.relative_to(REPO)))
def test_template_has_nothing_the_csp_refuses(path: Path) -> None:
    text = COMMENTS.sub("", path.read_text(encoding="utf-8"))
    found = [name for name, pattern in FORBIDDEN_IN_TEMPLATES.items() if pattern.search(text)]
    assert not found, f"{path.relative_to(REPO)}: {', '.join(found)}; move it to static/js or static/css"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: path.name)
def test_script_builds_no_markup_the_csp_refuses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [name for name, pattern in FORBIDDEN_IN_SCRIPTS.items() if pattern.search(text)]
    assert not found, f"{path.name}: {', '.join(found)}"
