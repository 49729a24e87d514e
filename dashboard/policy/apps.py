from django.apps import AppConfig


class PolicyConfig(AppConfig):
    name = "dashboard.policy"
    verbose_name = "Policy"

    def ready(self):
        from . import signals  # noqa: F401
