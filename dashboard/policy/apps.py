from django.apps import AppConfig


class PolicyConfig(AppConfig):
    name = "dashboard.policy"
    verbose_name = "Policy"

    def ready(self):
        from django.db.models.signals import post_migrate

        from . import signals  # noqa: F401
        from .roles import ensure_roles

        post_migrate.connect(ensure_roles, sender=self)
