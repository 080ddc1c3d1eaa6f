from __future__ import annotations

from django.apps import AppConfig


class LabellingConfig(AppConfig):
    name = "crowdlab.labelling"
    label = "labelling"
    verbose_name = "Assignments and annotations"
