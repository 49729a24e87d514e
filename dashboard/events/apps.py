from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "dashboard.events"
    verbose_name = "Events"
