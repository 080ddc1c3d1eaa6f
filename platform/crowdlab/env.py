"""Small helpers that read settings from the environment and fail loudly.

Each helper raises ``ImproperlyConfigured`` naming the variable and the values
it accepts, so a typo in a deployment never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from inference.embeddings import resolve_text_model

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"Environment variable {name} is required.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off.")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} must be at least {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} must be at most {maximum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return list(default)
    items = [part.strip() for part in value.split(",") if part.strip()]
    if not items:
        raise ImproperlyConfigured(f"{name} is set but empty; give a comma-separated list.")
    return items


def env_database(name: str) -> dict[str, Any] | None:
    """Django's database settings from a ``postgres://`` URL; None when the variable is unset
    (crowdlab then runs its embedded PostgreSQL, ``crowdlab.embedded``)."""
    import dj_database_url

    url = os.environ.get(name, "").strip()
    if not url:
        return None
    scheme = url.split(":", 1)[0]
    if scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"{name} uses scheme {scheme!r}; crowdlab runs on PostgreSQL only: give a postgres:// URL, "
            "or leave it unset for the embedded PostgreSQL in CROWDLAB_HOME."
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=60)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={url!r} is not a database URL: {exc}") from None
    # A plain dict like the embedded server's (settings.py uses one or the other as
    # DATABASES["default"]), not dj-database-url's TypedDict DBConfig.
    return dict[str, Any](config)


def env_broker(name: str) -> str | None:
    """The Celery broker URL; None when the variable is unset (crowdlab then uses
    kombu's filesystem transport in CROWDLAB_HOME, see settings)."""
    url = os.environ.get(name, "").strip()
    if not url:
        return None
    scheme = url.split(":", 1)[0]
    # memory:// reaches no worker: only for scripts that must enqueue nothing (bench/export.py).
    allowed = {"redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory"}
    if scheme not in allowed:
        raise ImproperlyConfigured(
            f"{name} uses scheme {scheme!r}; allowed: {', '.join(sorted(allowed))}, "
            "or leave it unset for the embedded broker in CROWDLAB_HOME."
        )
    return url


# Keys that shipped with crowdlab (the old settings default, the compose
# file's and the Docker build's placeholders): anyone can read them, so a
# deployment signing sessions with one of them signs nothing.
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-secret-key-change-me"
KNOWN_DEVELOPMENT_KEYS = frozenset({DEVELOPMENT_SECRET_KEY, "change-me-in-production", "build-only"})
# Django's startproject writes keys with this prefix and calls them insecure itself.
_INSECURE_PREFIX = "django-insecure-"
MAKE_SECRET_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"


def env_secret_key(name: str, *, debug: bool) -> str:
    """The signing key; with ``debug`` off it must be set and not a published one.

    Development (``DEBUG=1``) falls back to a fixed development key, so a
    developer needs nothing set; production never does: a guessable key lets
    anyone forge sessions, password-reset links and signed values.
    """
    value = os.environ.get(name, "").strip()
    published = value in KNOWN_DEVELOPMENT_KEYS or value.startswith(_INSECURE_PREFIX)
    if value and not published:
        return value
    if debug:
        return value or DEVELOPMENT_SECRET_KEY
    problem = (
        f"{name} is not set"
        if not value
        else f"{name} is one of the published development keys (crowdlab's own, or a {_INSECURE_PREFIX} key)"
    )
    raise ImproperlyConfigured(
        f"{problem} and DEBUG is off: crowdlab does not start without a private key, since anyone who knows the "
        f"key can forge sessions. Make one with  {MAKE_SECRET_KEY}  and set {name} to it (keep it private and "
        "stable: changing it logs everyone out). For local development, set DEBUG=1 instead."
    )


_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto`` (value ``https``) or ``Header-Name: value`` → Django's
    ``SECURE_PROXY_SSL_HEADER`` tuple; unset or empty → None (no proxy trusted).

    Only set it behind a proxy that always sets or strips this header: a client
    reaching the server directly could otherwise claim HTTPS.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    header, _, expected = value.partition(":")
    header, expected = header.strip(), expected.strip() or "https"
    if not _HEADER_NAME.match(header):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a header; use a header name such as X-Forwarded-Proto (its value must then "
            "be https), or 'Header-Name: value'."
        )
    return "HTTP_" + header.upper().replace("-", "_"), expected


def env_text_model(name: str) -> str:
    """The text featurizer: "tfidf" or a sentence-transformers model folder / hub name.

    Unset or "auto": the packaged all-MiniLM-L6-v2 (or its hub name) when the extra
    ``crowdlab[text]`` is installed, else "tfidf". A model named explicitly without
    the extra, a missing folder or a malformed name fails here, at start-up.
    """
    try:
        return resolve_text_model(os.environ.get(name))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
