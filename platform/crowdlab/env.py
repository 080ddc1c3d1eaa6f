"""Small helpers that read settings from the environment and fail loudly.

Each helper raises ``ImproperlyConfigured`` naming the variable and the values
it accepts, so a typo in a deployment never silently falls back to a default.
"""
from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

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
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off."
    )


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


def env_database(name: str, default: str) -> dict:
    import dj_database_url

    url = os.environ.get(name, default)
    scheme = url.split(":", 1)[0]
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ImproperlyConfigured(
            f"{name} uses scheme {scheme!r}; crowdlab supports postgres:// and sqlite://."
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=60)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={url!r} is not a database URL: {exc}") from None
    return config


def env_broker(name: str, default: str) -> str:
    url = os.environ.get(name, default)
    scheme = url.split(":", 1)[0]
    allowed = {"redis", "rediss", "amqp", "amqps", "pyamqp", "memory", "sqla+sqlite"}
    if scheme not in allowed:
        raise ImproperlyConfigured(
            f"{name} uses scheme {scheme!r}; allowed: {', '.join(sorted(allowed))}."
        )
    return url
