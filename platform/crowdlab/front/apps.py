from __future__ import annotations

from django.apps import AppConfig


class FrontConfig(AppConfig):
    name = "crowdlab.front"
    label = "front"
    verbose_name = "Web UI"
