"""``manage.py demo`` on a fresh machine: no SECRET_KEY set, DEBUG off.

The demo makes its own key once, keeps it in an untracked file readable by its
owner only, and reuses it; every other command still refuses to start without
a key (``test_settings.py``).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from crowdlab.demo_key import demo_secret_key

REPO = Path(__file__).resolve().parents[3]


def test_the_demo_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "demo-secret-key"
    key = demo_secret_key(path)
    assert len(key) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert demo_secret_key(path) == key
    assert demo_secret_key(tmp_path / "other") != key  # random, not a constant


def test_manage_py_demo_starts_without_any_key_set(tmp_path: Path) -> None:
    # The machine's PostgreSQL (not the embedded one) and a CROWDLAB_HOME of the test's own.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "CROWDLAB_HOME": str(tmp_path / "home"),
        "DATABASE_URL": os.environ["DATABASE_URL"],
    }
    demo = subprocess.run(
        [sys.executable, "manage.py", "demo", "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert demo.returncode == 0, demo.stderr
    assert "--no-serve" in demo.stdout
    # The key it uses lives in CROWDLAB_HOME, outside the checkout.
    assert (tmp_path / "home" / "demo-secret-key").is_file()
    # Any other command still refuses to start without a key.
    other = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert other.returncode != 0 and "SECRET_KEY is not set" in other.stderr
