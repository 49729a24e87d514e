"""`manage.py runagent`: the node agent.

With --token it is a remote node of the dashboard at --server. Without one it enrols
itself as a node of this machine's dashboard (it shares the database), which is what
`make run` does; the traffic still goes over the agent protocol like any node's.
"""

import asyncio
import logging
import os
import shutil
import signal
import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.backends import BACKENDS
from monitor.protocol import AGENT_PATH
from monitor.uplink import Refused, Uplink


class Command(BaseCommand):
    help = "Run the CrossEdge node agent (needs root): trace connections, judge them, send them to the dashboard."

    def add_arguments(self, parser):
        parser.add_argument(
            "--server",
            default=os.environ.get("CROSSEDGE_SERVER", "ws://127.0.0.1:8000"),
            help="dashboard base URL (env CROSSEDGE_SERVER; default ws://127.0.0.1:8000)",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get("CROSSEDGE_NODE_TOKEN"),
            help="node token from the admin (env CROSSEDGE_NODE_TOKEN); omit to enrol as this machine's local node",
        )
        parser.add_argument("--node", default=socket.gethostname(), help="node name when enrolling locally")
        parser.add_argument(
            "--docker-root",
            action="append",
            dest="docker_roots",
            help="where Docker keeps container metadata, for names (repeatable)",
        )

    def handle(self, *args, **opts):
        logging.getLogger("crossedge").setLevel(logging.INFO)
        if os.geteuid() != 0:
            raise CommandError(
                "the agent must run as root (it loads eBPF programs: CAP_BPF, CAP_PERFMON, "
                "CAP_SYS_ADMIN); try: sudo python manage.py runagent"
            )
        for backend in BACKENDS.values():
            if shutil.which(backend.program) is None:
                raise CommandError(f"{backend.program} is not installed ({backend.install_hint}, or `make setup`)")
        token = opts["token"] or self.enrol_local(opts["node"])
        roots = opts["docker_roots"] or settings.DOCKER_ROOTS
        agent = Agent(docker_roots=roots)
        url = opts["server"].rstrip("/") + AGENT_PATH
        try:
            asyncio.run(self.run(agent, Uplink(agent, url, token)))
        except Refused as exc:
            raise CommandError(str(exc)) from None

    def enrol_local(self, name: str) -> str:
        node = Node.objects.filter(name=name).first() or Node(name=name)
        token = node.issue_token()
        node.revoked = False
        node.save()
        self.stdout.write(f"enrolled this machine as node {name!r}")
        return token

    async def run(self, agent: Agent, uplink: Uplink) -> None:
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main.cancel)
        self.stdout.write(f"agent sending to {uplink.url}")
        try:
            await agent.run(uplink.run())
        except asyncio.CancelledError:
            self.stdout.write("agent stopped")
