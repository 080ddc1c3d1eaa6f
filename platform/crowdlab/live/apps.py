from __future__ import annotations

from django.apps import AppConfig

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
        # No eager mode (settings: tasks always go to a worker process), so
        # live.tasks is imported only by workers (Celery's autodiscovery):
        # the web sends runs by name and never loads inference.
