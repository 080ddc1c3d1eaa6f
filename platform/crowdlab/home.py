"""``CROWDLAB_HOME``: the folder an installed crowdlab owns.

It holds the embedded PostgreSQL's data (``pgdata/``), the embedded broker's
messages (``broker/``), the demo's signing key, Celery beat's schedule and,
when crowdlab runs from an installed wheel, uploaded media and collected
static files. Default: the per-user data folder of ``platformdirs``
(``~/.local/share/crowdlab`` on Linux), so that a ``pip install``-ed crowdlab
writes nothing next to its code, which may be read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout has manage.py two levels above the package (platform/crowdlab);
# an installed wheel does not. Developers keep media/ and staticfiles/ in the checkout.
SOURCE_ROOT: Path | None = PACKAGE_DIR.parent.parent if (PACKAGE_DIR.parent.parent / "manage.py").is_file() else None


def crowdlab_home() -> Path:
    """``CROWDLAB_HOME`` if set, else the per-user data folder (not created here:
    a deployment with its own database and broker may never write to it)."""
    value = os.environ.get("CROWDLAB_HOME", "").strip()
    if value:
        home = Path(value).expanduser().resolve()
    else:
        import platformdirs

        home = platformdirs.user_data_path("crowdlab", appauthor=False)
    return home
