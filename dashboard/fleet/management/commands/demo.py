"""`manage.py demo`: the seed's edge containers as real cgroups making real connections.

edge-app-prod and edge-app-staging each run a client that connects every few seconds to
127.8.8.8:80, 127.10.10.5:443 and 127.0.0.2:3306, where this command listens on
loopback, and one that looks names up at this command's DNS server (127.53.53.53, which
answers only the demo's names, with loopback addresses) and connects to the answers. It
imports the demo policy (merge) and removes its cgroups on exit.
"""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from monitor.testbed import DnsServer, SimulatedContainer, listen

CONTAINERS = ("edge-app-prod", "edge-app-staging")
TARGETS = ("127.8.8.8:80", "127.10.10.5:443", "127.0.0.2:3306")
DNS_SERVER = "127.53.53.53"
NAMES = {"api.edge.example": "127.10.10.5", "updates.edge.example": "127.8.8.9", "paste.bad.example": "127.66.0.1"}
NAMED_PORT = 443
PARENT = "crossedge-demo.slice"
POLICY = Path(__file__).resolve().parents[3] / "policy" / "demo.yaml"


class Command(BaseCommand):
    help = "Run the demo workload: simulated edge containers connecting to loopback targets."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=3.0, help="seconds between connection rounds")
        parser.add_argument("--no-policy", action="store_true", help="do not import the demo policy")

    def handle(self, *args, **opts):
        if os.geteuid() != 0:
            raise CommandError("the demo makes cgroups and must run as root")
        if not opts["no_policy"]:
            call_command("policy", "import", str(POLICY), stdout=self.stdout)
        listeners = []
        for target in (*TARGETS, *(f"{a}:{NAMED_PORT}" for a in NAMES.values() if a != "127.10.10.5")):
            host, port = target.rsplit(":", 1)
            try:
                listeners.append(listen(host, int(port)))
            except OSError as exc:
                raise CommandError(f"cannot listen on {target}: {exc.strerror}") from None
        try:
            names = DnsServer(DNS_SERVER, ttl=30)
        except OSError as exc:
            raise CommandError(f"cannot serve DNS on {DNS_SERVER}:53: {exc.strerror}") from None
        for name, address in NAMES.items():
            names.set(name, address)
        docker_root = str(settings.VAR_DIR / "demo-docker")
        containers = [SimulatedContainer(name, PARENT, docker_root) for name in CONTAINERS]
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            for c in containers:
                c.create()
                c.spawn(
                    [sys.executable, "-m", "monitor.testbed", "connect", "--every", str(opts["every"]), *TARGETS],
                    cwd=settings.BASE_DIR,
                )
                c.spawn([sys.executable, "-m", "monitor.testbed", "resolve", "--every", str(opts["every"]), DNS_SERVER,
                         str(NAMED_PORT), *NAMES], cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL)  # fmt: skip
                self.stdout.write(f"container {c.name}: cgroup {c.cgroup_path}")
            self.stdout.write(
                f"demo running: connections every {opts['every']}s to {', '.join(TARGETS)} and to "
                f"{', '.join(NAMES)} (names served at {DNS_SERVER}); Ctrl-C stops it"
            )
            stop.wait()
        finally:
            for c in containers:
                c.remove()
            for sock in listeners:
                sock.close()
            names.stop()
            self.stdout.write("demo stopped, cgroups removed")
