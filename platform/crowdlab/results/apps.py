from __future__ import annotations

from django.apps import AppConfig


class ResultsConfig(AppConfig):
    name = "crowdlab.results"
    label = "results"
    verbose_name = "Inference results"
