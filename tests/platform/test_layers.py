"""Dependencies run one way: the import-linter contracts in ``pyproject.toml``.

``crowdlab``'s config modules on top, then ``api | front``, ``live``,
``results``, ``labelling``, ``projects`` and the shared helpers; ``inference``
never imports Django or ``crowdlab``. The first test runs ``lint-imports`` as a
developer would; the others prove that the configured contracts really break
when a lower app imports a higher one (a contract that cannot fail checks
nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = str(REPO_ROOT / "pyproject.toml")


def test_lint_imports_keeps_every_contract() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)])}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", PYPROJECT, "--no-cache"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def _contract_options(contract_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    config = read_configuration(PYPROJECT)
    (options,) = [c for c in config["contracts_options"] if c.get("id") == contract_id]
    return config["session_options"], options


@pytest.fixture
def graph() -> grimp.ImportGraph:
    """The import graph of the code as it is; fresh per test, because checking a
    contract removes its ignored imports from the graph. No cache: a stale one
    (it lives in the working directory) would check old code."""
    session, _ = _contract_options("crowdlab-layers")
    return grimp.build_graph(*session["root_packages"], include_external_packages=True, cache_dir=None)


def an_import(graph: grimp.ImportGraph, importer: str, imported: str) -> None:
    graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")


def _layers_kept(graph: grimp.ImportGraph) -> bool:
    session, options = _contract_options("crowdlab-layers")
    return (
        LayersContract(name=options["name"], session_options=session, contract_options=options)
        .check(graph, verbose=False)
        .kept
    )


def test_the_layers_hold_in_the_code_as_it_is(graph: grimp.ImportGraph) -> None:
    assert _layers_kept(graph)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("crowdlab.labelling.services", "crowdlab.live.triggers"),  # what labelling.hooks replaced
        ("crowdlab.projects.admin", "crowdlab.results.admin"),
        ("crowdlab.results.selectors", "crowdlab.live.services"),
        ("crowdlab.live.triggers", "crowdlab.api.hot"),
        ("crowdlab.api.views.runs", "crowdlab.front.views"),  # api and front are independent
        ("crowdlab.projects.models", "crowdlab.settings"),  # apps read django.conf.settings
    ],
)
def test_an_upward_import_breaks_the_layers(graph: grimp.ImportGraph, importer: str, imported: str) -> None:
    an_import(graph, importer, imported)
    assert not _layers_kept(graph)


@pytest.mark.parametrize("imported", ["crowdlab.projects.models", "django"])
def test_inference_importing_django_or_crowdlab_breaks_its_contract(imported: str) -> None:
    session, options = _contract_options("inference-pure")

    def kept(graph: grimp.ImportGraph) -> bool:
        contract = ForbiddenContract(name=options["name"], session_options=session, contract_options=options)
        return contract.check(graph, verbose=False).kept

    def fresh() -> grimp.ImportGraph:
        return grimp.build_graph(*session["root_packages"], include_external_packages=True, cache_dir=None)

    assert kept(fresh())
    graph = fresh()
    an_import(graph, "inference.data", imported)
    assert not kept(graph)
