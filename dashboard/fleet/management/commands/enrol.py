"""`manage.py enrol NAME [NAME ...]`: create nodes (or issue new tokens for them) and print
each token once: alone for one name, as `NAME TOKEN` lines for several.

The admin does the same from the Nodes page; this is for scripts and provisioning.
"""

from django.core.management.base import BaseCommand

from dashboard.fleet.models import Node
from dashboard.fleet.signals import cut_off


class Command(BaseCommand):
    help = "Create node NAME (or rotate its token) and print the token; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="+", help="one or more node names (several: `NAME TOKEN` lines)")

    def handle(self, *args, **opts):
        names = opts["name"]
        for name in names:
            token = self.enrol(name)
            self.stdout.write(token if len(names) == 1 else f"{name} {token}")

    def enrol(self, name: str) -> str:
        node = Node.objects.filter(name=name).first()
        rotated = node is not None
        node = node or Node(name=name)
        token = node.issue_token()
        node.revoked = False
        node.save()
        if rotated:
            cut_off(node.pk)  # the old token's connection goes
            self.stderr.write(f"node {node.name!r} existed: its old token no longer works")
        return token
