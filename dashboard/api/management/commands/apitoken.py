from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from dashboard.api.models import ApiToken
from dashboard.audit.trail import record


class Command(BaseCommand):
    help = "Create an API key for USER (printed once); use it as 'Authorization: Token <key>'."

    def add_arguments(self, parser):
        parser.add_argument("user")
        parser.add_argument("name", nargs="?", default="script")

    def handle(self, *args, **opts):
        user = get_user_model().objects.filter(username=opts["user"]).first()
        if user is None:
            raise CommandError(f"no user {opts['user']!r}")
        _, key = ApiToken.create_for(user, opts["name"])
        record("api_token_issued", f"{user.get_username()}: {opts['name']}")
        self.stdout.write(key)
