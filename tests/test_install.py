"""``pip install .`` (not editable) into a fresh virtualenv, used from outside the repository.

Proves the wheel holds the whole package: every subpackage, the migrations, the
management commands, the templates and the static files (crowdlab/_templates,
crowdlab/_static), and that the ``crowdlab`` console script works. Slow (a
venv, torch from the local wheel): ``.ci/run`` runs it as a step of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.install, pytest.mark.timeout(900)]


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_pip_install_dot_gives_a_working_crowdlab_outside_the_repository(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "torch==2.13.0"])  # the local CPU wheel, first, as the README says
    _run([*pip, str(REPO)])

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    package = Path(
        _run(
            [str(venv / "bin" / "python"), "-c", "import crowdlab, inference; print(crowdlab.__file__)"], cwd=outside
        ).stdout.strip()
    ).parent
    assert REPO not in package.parents  # the installed copy, not the checkout
    assert (package / "_templates" / "base.html").is_file()
    assert (package / "_static" / "favicon.svg").is_file()
    assert (package / "projects" / "migrations" / "0001_initial.py").is_file()
    assert (package / "front" / "management" / "commands" / "demo.py").is_file()

    scratch = f"crowdlab_install_{uuid.uuid4().hex[:8]}"
    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{scratch}"')
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path / "user"),
        "CROWDLAB_HOME": str(tmp_path / "crowdlab-home"),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{scratch}",
        "CELERY_BROKER_URL": "memory://",
        "SECRET_KEY": "install-test-" + uuid.uuid4().hex * 2,
    }
    crowdlab = str(venv / "bin" / "crowdlab")
    try:
        _run([crowdlab, "manage", "check"], cwd=outside, env=env)
        _run([crowdlab, "manage", "migrate", "--noinput", "-v0"], cwd=outside, env=env)
        _run([crowdlab, "manage", "collectstatic", "--noinput", "-v0"], cwd=outside, env=env)
        # Installed, collected static files go to CROWDLAB_HOME, never next to the code.
        assert (tmp_path / "crowdlab-home" / "staticfiles" / "favicon.svg").is_file()
        login = _run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import django; django.setup(); from django.test import Client; "
                "r = Client().get('/login/'); print(r.status_code); print(r.content.decode())",
            ],
            cwd=outside,
            env={**env, "DJANGO_SETTINGS_MODULE": "crowdlab.settings"},
        ).stdout
        assert login.startswith("200\n") and "<form" in login and "/static/" in login
        fit_help = _run([crowdlab, "fit", "--help"], cwd=outside, env=env).stdout
        assert "--annotations" in fit_help and "--model" in fit_help
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
