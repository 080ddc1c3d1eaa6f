from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings

from crowdlab.labelling import hooks


class LiveConfig(AppConfig):
    name = "crowdlab.live"
    label = "live"
    verbose_name = "Live inference"

    def ready(self) -> None:
        # Imported here, as Django prescribes for hooks: the triggers need the
        # models of the apps below, which are loaded only now.
        from . import triggers

        # Stored labels reach the live trigger through labelling's hook:
        # labelling sits below live and never imports it.
        hooks.set_listener(triggers.LISTENER)
        if settings.CELERY_TASK_ALWAYS_EAGER:
            # Eager mode runs tasks inside this process, so they must be
            # registered here; otherwise only workers import them (the
            # triggers send runs by name) and the web stays without inference.
            from . import tasks  # noqa: F401
