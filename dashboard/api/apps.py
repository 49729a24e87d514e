from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "dashboard.api"
    verbose_name = "API"
