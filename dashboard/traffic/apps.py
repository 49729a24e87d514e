from django.apps import AppConfig


class TrafficConfig(AppConfig):
    name = "dashboard.traffic"
    verbose_name = "Traffic"
