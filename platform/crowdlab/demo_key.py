"""The signing key of ``crowdlab demo`` and of the embedded setup.

The demo serves like a deployment (DEBUG off), and crowdlab refuses to start
with DEBUG off and no SECRET_KEY. Rather than a key everyone knows, the demo
makes one the first time, keeps it in ``CROWDLAB_HOME/demo-secret-key``
(outside any checkout, next to the embedded database whose sessions it signs)
readable by its owner only, and reuses it, so demo sessions survive a restart.
``crowdlab.cli.local_secret_key`` calls this before the settings load; a
SECRET_KEY in the environment wins.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def demo_secret_key(path: Path) -> str:
    """The key stored at ``path``, made (50 random bytes, URL-safe) if missing or empty."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    key = secrets.token_urlsafe(50)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: the key never sits in a world-readable file.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key
