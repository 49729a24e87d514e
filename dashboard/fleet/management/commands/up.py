"""`manage.py up`: the dashboard (daphne) and this machine's agent, and optionally the demo.

Used by `make run`. Children get SIGTERM on Ctrl-C or when any of them exits.
"""

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from .demo import PARENT as DEMO_PARENT


class Command(BaseCommand):
    help = "Run the dashboard with a local agent (and --demo workload) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("CROSSEDGE_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("CROSSEDGE_PORT", "8000")))
        parser.add_argument("--demo", action="store_true", help="also run the demo workload")
        parser.add_argument("--no-agent", action="store_true", help="dashboard only")

    def handle(self, *args, **opts):
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        host, port = opts["host"], opts["port"]
        children = {}
        stopping = []
        # The demo's enforcement is the demo's own: its cgroups only, its own pins, removed after.
        demo_pins = f"{settings.PIN_ROOT}-demo"
        demo_enforcement = ["--enforce-scope", f"/{DEMO_PARENT}/*", "--pin-root", demo_pins] if opts["demo"] else []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        try:
            children["dashboard"] = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "dashboard.asgi:application"],
                cwd=settings.BASE_DIR,
            )
            self.wait_for_port(host, port, children["dashboard"])
            self.stdout.write(self.style.SUCCESS(f"dashboard: http://{host}:{port}/"))
            if not opts["no_agent"]:
                children["agent"] = subprocess.Popen(
                    [*manage, "runagent", "--server", f"ws://{host}:{port}", *demo_enforcement], cwd=settings.BASE_DIR
                )
            if opts["demo"]:
                children["demo"] = subprocess.Popen([*manage, "demo"], cwd=settings.BASE_DIR)
            self.watch(children, stopping)
        finally:
            for proc in reversed(list(children.values())):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in children.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if demo_enforcement and "agent" in children:
                subprocess.run([*manage, "runagent", "--uninstall", "--pin-root", demo_pins], cwd=settings.BASE_DIR)

    def watch(self, children: dict, stopping: list) -> None:
        """Until Ctrl-C, or the dashboard exits. An agent or demo that exits (e.g. a revoked
        node's agent) is reported once; the dashboard keeps serving the other nodes."""
        reported = set()
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is None or name in reported:
                    continue
                if name == "dashboard":
                    raise CommandError(f"the dashboard exited with status {proc.returncode}; stopping")
                self.stderr.write(f"{name} exited with status {proc.returncode}; the dashboard keeps running")
                reported.add(name)
            time.sleep(0.5)

    def wait_for_port(self, host, port, proc, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CommandError(f"the dashboard exited with status {proc.returncode} (is port {port} in use?)")
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise CommandError(f"the dashboard did not listen on {host}:{port} within {timeout}s")
