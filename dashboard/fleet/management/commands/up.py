"""`manage.py up`: the dashboard (daphne) and this machine's agent, and optionally the demo.

Used by `make run`. Children get SIGTERM on Ctrl-C or when any of them exits.
"""

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from .demo import DNS_SERVER as DEMO_DNS
from .demo import PARENT as DEMO_PARENT

# What the web process needs, checked as its user: the code, the database, the var directory.
WEB_PROBE = """
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django.setup()
from django.conf import settings
from django.db import connection
with connection.cursor() as cursor:  # a write lock: ingest writes
    cursor.execute("BEGIN IMMEDIATE" if connection.vendor == "sqlite" else "SELECT 1")
    cursor.execute("ROLLBACK" if connection.vendor == "sqlite" else "SELECT 1")
assert os.access(settings.VAR_DIR, os.W_OK), f"cannot write {settings.VAR_DIR}"
"""


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
        demo_enforcement = (
            ["--enforce-scope", f"/{DEMO_PARENT}/*", "--pin-root", demo_pins, "--dns-resolver", DEMO_DNS]
            if opts["demo"]
            else []
        )  # (the demo's names come from its own DNS server)
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        try:
            as_web_user = self.web_user()
            children["dashboard"] = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "dashboard.asgi:application"],
                cwd=settings.BASE_DIR,
                **as_web_user,
            )
            self.wait_for_port(host, port, children["dashboard"])
            self.stdout.write(self.style.SUCCESS(f"dashboard: http://{host}:{port}/"))
            if not opts["no_agent"]:
                children["agent"] = subprocess.Popen(
                    [*manage, "runagent", "--server", f"ws://{host}:{port}", *demo_enforcement], cwd=settings.BASE_DIR
                )
            if settings.RETENTION_DAYS or settings.ROLLUP_DAYS:  # the web user's process: it owns the database
                children["pruner"] = subprocess.Popen(
                    [*manage, "prune", "--every", "300", "--quiet"], cwd=settings.BASE_DIR, **as_web_user
                )
            children["alerts"] = subprocess.Popen([*manage, "alerts"], cwd=settings.BASE_DIR, **as_web_user)
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

    def web_user(self) -> dict:
        """Popen arguments that run the web process as settings.WEB_USER: only the agent needs
        root. The user is made if missing (a system user with no login) and given the var
        directory's database and secret key. Where it cannot read the checkout or write the
        var directory, the dashboard runs as root and says so."""
        name = settings.WEB_USER
        if os.geteuid() != 0 or not name:
            return {}
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", name],
                check=True, capture_output=True,
            )  # fmt: skip
            account = pwd.getpwnam(name)
        database = Path(settings.DATABASES["default"]["NAME"])
        sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
        owned = [settings.VAR_DIR, settings.VAR_DIR / "secret_key"]
        owned += [database.parent, *database.parent.glob(database.name + "*")] if sqlite else []
        for path in owned:
            if path.exists():
                os.chown(path, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        try:
            probe = subprocess.run(
                [sys.executable, "-c", WEB_PROBE], cwd=settings.BASE_DIR, capture_output=True, text=True, **as_user
            )
            why = (probe.stderr.strip().splitlines() or ["no reason given"])[-1] if probe.returncode else ""
        except OSError as exc:  # e.g. the interpreter lives where that user cannot reach it
            why = str(exc)
        if why:
            self.stderr.write(f"warning: the dashboard runs as root: {name} cannot run it here ({why})")
            return {}
        self.stdout.write(f"dashboard runs as {name} (uid {account.pw_uid}); the agent as root")
        return as_user

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
