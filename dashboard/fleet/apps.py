from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "dashboard.fleet"
    verbose_name = "Nodes and containers"

    def ready(self):
        from . import signals  # noqa: F401
