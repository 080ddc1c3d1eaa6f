from __future__ import annotations

from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "crowdlab.projects"
    label = "projects"
    verbose_name = "Projects and items"
