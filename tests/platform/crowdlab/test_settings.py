"""Issue 14, item 4: production settings.

* With DEBUG off, crowdlab refuses to start without a SECRET_KEY or with a
  published one, and says how to make one.
* HTTPS switches come from the environment; ``docker/compose.yaml`` sets them,
  carries no usable key, and ``manage.py check --deploy`` with its production
  variables prints no warning.

The start-up checks run ``manage.py`` in a subprocess with an environment
built from scratch, as a deployment would start it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from crowdlab.env import DEVELOPMENT_SECRET_KEY, env_proxy_ssl_header, env_secret_key, env_text_model
from inference.embeddings import default_text_model, sentence_transformers_available

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "docker" / "compose.yaml"
PUBLISHED_KEYS = [
    DEVELOPMENT_SECRET_KEY,
    "change-me-in-production",
    "build-only",
    "django-insecure-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdef",
]


def _clean_env(**variables: str) -> dict[str, str]:
    """A process environment with nothing of this test run's (its SECRET_KEY included)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        **variables,
    }


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def _compose_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The web service's environment in docker/compose.yaml, interpolated as
    ``docker compose`` does (``${VAR:-default}``, ``${VAR:?message}``, ``${VAR}``)."""
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    environment = compose["services"]["web"]["environment"]

    def interpolate(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            name, op, rest = match.group(1), match.group(2), match.group(3) or ""
            if name in overrides and (op != ":-" or overrides[name]):
                return overrides[name]
            if op == ":-":
                return rest
            if op == ":?":
                raise LookupError(f"{name}: {rest}")
            return ""

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, str(value)).replace("$$", "$")

    return {name: interpolate(value) for name, value in environment.items()}


# --------------------------------------------------------------------------- SECRET_KEY


def test_without_a_secret_key_and_with_debug_off_crowdlab_refuses_to_start() -> None:
    result = _manage("check", env=_clean_env(DEBUG="0"))
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set and DEBUG is off" in result.stderr
    # ... and says how to make one.
    assert "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'" in result.stderr


def test_the_compose_files_old_default_key_is_refused_at_start() -> None:
    result = _manage("check", env=_clean_env(SECRET_KEY="change-me-in-production"))
    assert result.returncode != 0
    assert "SECRET_KEY is one of the published development keys" in result.stderr


def test_a_private_key_starts_and_debug_starts_without_one() -> None:
    assert _manage("check", env=_clean_env(SECRET_KEY=secrets.token_urlsafe(50))).returncode == 0
    assert _manage("check", env=_clean_env(DEBUG="1")).returncode == 0


@pytest.mark.parametrize("key", [*PUBLISHED_KEYS, "", "   "])
def test_published_or_empty_keys_are_refused_with_debug_off(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", key)
    with pytest.raises(ImproperlyConfigured, match=r"secrets\.token_urlsafe"):
        env_secret_key("SECRET_KEY", debug=False)


def test_debug_falls_back_to_the_development_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    assert env_secret_key("SECRET_KEY", debug=True) == DEVELOPMENT_SECRET_KEY
    monkeypatch.setenv("SECRET_KEY", "a-private-key-" + "x" * 40)
    assert env_secret_key("SECRET_KEY", debug=False) == "a-private-key-" + "x" * 40


# --------------------------------------------------------------------------- HTTPS switches, compose


def test_compose_carries_no_usable_default_key() -> None:
    with pytest.raises(LookupError, match="SECRET_KEY"):
        _compose_environment({})
    text = COMPOSE.read_text(encoding="utf-8")
    assert not any(key in text for key in PUBLISHED_KEYS)


def test_check_deploy_with_the_compose_production_variables_prints_no_warning() -> None:
    environment = _compose_environment({"SECRET_KEY": secrets.token_urlsafe(50)})
    assert environment["DEBUG"] == "0" and environment["SECURE_SSL_REDIRECT"] == "1"

    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_clean_env(**environment))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_the_same_check_warns_without_the_https_switches() -> None:
    # The check is not vacuous: today's defaults (plain HTTP, for development) warn.
    result = _manage("check", "--deploy", env=_clean_env(SECRET_KEY=secrets.token_urlsafe(50)))
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr


def test_settings_read_the_https_switches_and_limits_from_the_environment() -> None:
    environment = _compose_environment(
        {"SECRET_KEY": secrets.token_urlsafe(50), "LOGIN_FAILURE_LIMIT": "7", "LOGIN_LOCKOUT_SECONDS": "60"}
    )
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, "
        "list(s.SECURE_PROXY_SSL_HEADER), s.REST_FRAMEWORK['NUM_PROXIES'], s.AXES_FAILURE_LIMIT, "
        "s.AXES_COOLOFF_TIME.total_seconds()]))"
    )
    env = _clean_env(
        **environment,
        PYTHONPATH=os.pathsep.join([str(REPO / "platform"), str(REPO)]),
        DJANGO_SETTINGS_MODULE="crowdlab.settings",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        True,
        True,
        True,
        31536000,
        True,
        True,
        ["HTTP_X_FORWARDED_PROTO", "https"],
        1,
        7,
        60.0,
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("X-Forwarded-Proto", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("X-Forwarded-Ssl: on", ("HTTP_X_FORWARDED_SSL", "on")),
    ],
)
def test_proxy_ssl_header_values(value: str, expected: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", value)
    assert env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER") == expected


def test_a_malformed_proxy_ssl_header_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", "X Forwarded Proto")
    with pytest.raises(ImproperlyConfigured, match=r"SECURE_PROXY_SSL_HEADER=.*X-Forwarded-Proto"):
        env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/no/such/model", "does not exist"),
        ("not a model name", "neither"),
        ("", "must not be empty"),
    ],
)
def test_a_bad_text_embedding_model_names_the_variable(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEXT_EMBEDDING_MODEL", value)
    with pytest.raises(ImproperlyConfigured, match=rf"TEXT_EMBEDDING_MODEL: .*{message}"):
        env_text_model("TEXT_EMBEDDING_MODEL")


def test_text_embedding_model_tfidf_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXT_EMBEDDING_MODEL", "tfidf")
    assert env_text_model("TEXT_EMBEDDING_MODEL") == "tfidf"
    monkeypatch.delenv("TEXT_EMBEDDING_MODEL")
    # Unset: the packaged or hub MiniLM with the extra, TF-IDF without it.
    assert env_text_model("TEXT_EMBEDDING_MODEL") in (default_text_model(), "tfidf")
    assert (env_text_model("TEXT_EMBEDDING_MODEL") == "tfidf") != sentence_transformers_available()
