import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the 'admin' superuser if no superuser exists. Password from CROSSEDGE_ADMIN_PASSWORD, "
        "or generated and printed once."
    )

    def handle(self, *args, **opts):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin account exists")
            return
        password = os.environ.get("CROSSEDGE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        if os.environ.get("CROSSEDGE_ADMIN_PASSWORD"):
            self.stdout.write("created user 'admin' with the password from CROSSEDGE_ADMIN_PASSWORD")
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"created user 'admin' with password: {password}\n(shown once; change it with "
                    "`python manage.py changepassword admin`)"
                )
            )
