"""Unset database/broker variables mean "embedded"; SQLite is refused with a clear error."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from crowdlab.env import env_broker, env_database


def test_unset_database_and_broker_mean_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_DATABASE_URL", raising=False)
    monkeypatch.setenv("X_BROKER_URL", "")
    assert env_database("X_DATABASE_URL") is None
    assert env_broker("X_BROKER_URL") is None


def test_sqlite_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_DATABASE_URL", "sqlite:///db.sqlite3")
    with pytest.raises(ImproperlyConfigured, match=r"X_DATABASE_URL uses scheme 'sqlite'.*PostgreSQL only"):
        env_database("X_DATABASE_URL")


def test_a_postgres_url_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_DATABASE_URL", "postgres://alice@db.example:5433/crowd")
    config = env_database("X_DATABASE_URL")
    assert config is not None
    assert (config["NAME"], config["HOST"], config["PORT"]) == ("crowd", "db.example", 5433)


@pytest.mark.parametrize("url", ["sqla+sqlite:///x.db", "kafka://host"])
def test_other_brokers_are_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("X_BROKER_URL", url)
    with pytest.raises(ImproperlyConfigured, match="X_BROKER_URL uses scheme"):
        env_broker("X_BROKER_URL")
