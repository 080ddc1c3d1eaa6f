"""Fixtures for the API tests that go through the WSGI application (schemathesis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def keep_connection(db: None) -> Iterator[None]:
    """Like Django's test client: keep the test's connection (and transaction)
    open across WSGI requests instead of closing it when a request ends."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
