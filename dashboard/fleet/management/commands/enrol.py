"""`manage.py enrol NAME`: create a node (or issue a new token for it) and print the token once.

The admin does the same from the Nodes page; this is for scripts and provisioning.
"""

from django.core.management.base import BaseCommand

from dashboard.fleet.models import Node
from dashboard.fleet.signals import cut_off


class Command(BaseCommand):
    help = "Create node NAME (or rotate its token) and print the token; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, **opts):
        node = Node.objects.filter(name=opts["name"]).first()
        rotated = node is not None
        node = node or Node(name=opts["name"])
        token = node.issue_token()
        node.revoked = False
        node.save()
        if rotated:
            cut_off(node.pk)  # the old token's connection goes
            self.stderr.write(f"node {node.name!r} existed: its old token no longer works")
        self.stdout.write(token)
