from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "dashboard.alerts"
    verbose_name = "Alert outputs"

    def ready(self):
        from . import signals  # noqa: F401
