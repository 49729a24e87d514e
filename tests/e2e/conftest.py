"""Browser end-to-end tests: Debian's chromium, headless, driven by pytest-playwright, against
the product as `make run` starts it (daphne + the local agent) with its own database,
cgroups and pins. Screenshots go to test-artifacts/ (git-ignored) for reviewers."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitor.testbed import SimulatedContainer, listen, namespace_pair

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORDS = {"admin": "pw-e2e-admin-1", "val": "pw-e2e-viewer-1", "eddie": "pw-e2e-editor-1"}
POLICY = """version: '1.0'
rules:
  - id: e2e-suspicious
    description: Alert on the suspicious host
    severity: high
    match: {dest_ip: 127.10.10.5/32}
    action: alert
  - id: e2e-no-forbidden
    description: A binary no container may run
    severity: critical
    match: {binary: %(forbidden)s}
    action: deny
  - id: e2e-no-secret
    description: No container reads the secret
    severity: critical
    match: {path: %(secrets)s/secret, access: [read]}
    action: deny
  - id: e2e-watch-secrets
    description: Report every open of the secrets (a watch)
    match: {path: %(secrets)s/*}
    action: allow
  - id: e2e-no-blocked-name
    description: No container talks to blocked.e2e.test, whatever its address
    severity: high
    match: {dest_fqdn: blocked.e2e.test}
    action: deny
  - id: e2e-scan-guard
    description: A container reaching 100 new destinations within a second is scanning
    severity: high
    match: {container: "*e2e-b"}
    limit: {new_destinations: 100}
    action: deny
    hold: 2
  - id: e2e-syn-flood
    description: A source sending 200 SYNs within a second is flooding us
    severity: critical
    match: {}
    limit: {syn_per_source: 200}
    action: deny
    hold: 2
"""
USERS = """
from django.contrib.auth.models import Group, User
from dashboard.policy.roles import EDITORS, VIEWERS
v = User.objects.create_user("val", "", "%(val)s"); v.groups.add(Group.objects.get(name=VIEWERS))
e = User.objects.create_user("eddie", "", "%(eddie)s", is_staff=True); e.groups.add(Group.objects.get(name=EDITORS))
"""


# Chromium on its own reaches for DNS servers and DNS-over-HTTPS endpoints. Test traffic may
# only go to loopback, so the browser runs in a cgroup of ours where CrossEdge itself refuses
# every other destination, and with flags that stop it from trying in the first place.
JAIL_POLICY = [
    {"id": "browser-loopback4", "priority": 1, "match": {"dest_ip": "127.0.0.0/8"}, "action": "allow"},
    {"id": "browser-loopback6", "priority": 1, "match": {"dest_ip": "::1/128"}, "action": "allow"},
    {"id": "browser-nothing-else", "priority": 2, "match": {}, "action": "deny"},
]
QUIET_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-domain-reliability",
    "--dns-prefetch-disable", "--no-pings", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-features=DnsOverHttps,AsyncDns,NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
]  # fmt: skip


@pytest.fixture(scope="session")
def browser_jail(tmp_path_factory):
    """A container cgroup with loopback-only enforcement, and a launcher that runs chromium in it."""
    from monitor.kernel.enforcer import Enforcer
    from monitor.rules import RuleSet
    from tests.conftest import _kernel_problem

    if not os.path.exists(CHROMIUM) or _kernel_problem():
        reason = f"{CHROMIUM} is not installed" if not os.path.exists(CHROMIUM) else _kernel_problem()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run in CI: {reason} (make test installs chromium)")
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("browser")
    tag = uuid.uuid4().hex[:8]
    jail = SimulatedContainer("e2e-browser", f"crossedge-test-{tag}-browser.slice", str(tmp / "docker")).create()
    enforcer = Enforcer(
        pin_root=f"/sys/fs/bpf/crossedge-test-{tag}-browser", scope=jail.cgroup_path, dns_resolvers=("127.53.53.53",)
    )  # (the browser test's DNS server)
    launcher = tmp / "chromium-in-jail"
    launcher.write_text(f'#!/bin/sh\necho $$ > {jail.dir}/cgroup.procs\nexec {CHROMIUM} "$@"\n')
    launcher.chmod(0o755)
    try:
        enforcer.start()
        enforcer.sync(RuleSet.from_specs(JAIL_POLICY, 1))
        assert enforcer.targets == [jail.cgroup_path] and enforcer.policy_version == 1, enforcer.health()
        yield SimpleNamespace(launcher=str(launcher), enforcer=enforcer)
    finally:
        enforcer.uninstall()
        jail.remove()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args, browser_jail):
    return {**browser_type_launch_args, "executable_path": browser_jail.launcher, "args": QUIET_FLAGS}


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """The dashboard and the local agent, running; two containers of our own; a target."""
    from tests.conftest import _kernel_problem

    problem = _kernel_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"e2e test cannot run in CI: {problem}")
        pytest.skip(problem)
    tmp = tmp_path_factory.mktemp("e2e")
    tag = uuid.uuid4().hex[:8]
    parent = f"crossedge-test-{tag}.slice"
    pins = f"/sys/fs/bpf/crossedge-test-{tag}"
    netns = (f"ce-e2e-{tag[:6]}-a", f"ce-e2e-{tag[:6]}-b")  # namespace_pair's: the node's XDP interface is in b
    env = {
        **os.environ,
        "CROSSEDGE_VAR_DIR": str(tmp),
        "CROSSEDGE_ADMIN_PASSWORD": PASSWORDS["admin"],
        "CROSSEDGE_ENFORCE_SCOPE": f"/{parent}/*",
        "CROSSEDGE_PIN_ROOT": pins,
        "CROSSEDGE_DOCKER_ROOTS": str(tmp / "docker"),
        "CROSSEDGE_XDP_IFACES": f"{netns[1]}/ce-b",
        "CROSSEDGE_DNS_RESOLVERS": "127.53.53.53",  # the tests' DNS server (the env the agent's option reads)
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    def manage(*args, **kw):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True, **kw).stdout  # fmt: skip

    manage("migrate", "--noinput")
    manage("ensureadmin")
    manage("shell", "--no-imports", "-c", USERS % PASSWORDS)
    forbidden = tmp / "bin" / "forbidden"  # a copy of echo: the exec rule kills it at exec
    forbidden.parent.mkdir()
    shutil.copy("/bin/echo", forbidden)
    secrets = tmp / "secrets"  # watched by a rule; reading `secret` is killed at the open
    secrets.mkdir()
    (secrets / "token").write_text("t0ken")
    (secrets / "secret").write_text("you should never read this")
    (tmp / "policy.yaml").write_text(POLICY % {"forbidden": forbidden, "secrets": secrets})
    manage("policy", "import", str(tmp / "policy.yaml"))
    key = manage("apitoken", "admin", "e2e").strip()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    stack = contextlib.ExitStack()
    assert stack.enter_context(namespace_pair(f"e2e-{tag[:6]}")) == netns
    up = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(port)], cwd=ROOT, env=env,
                          stdout=open(tmp / "up.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115  # fmt: skip
    target = listen("127.10.10.5", 0)
    containers = {name: SimulatedContainer(name, parent, str(tmp / "docker")).create() for name in ("e2e-a", "e2e-b")}
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                req = urllib.request.Request(f"{base}/api/nodes/", headers={"Authorization": f"Token {key}"})
                nodes = json.load(urllib.request.urlopen(req, timeout=2))["results"]
                health_ok = nodes and nodes[0]["status"] == "online"
            except OSError:
                health_ok = False
            if health_ok:
                break
            assert time.monotonic() < deadline, (tmp / "up.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # the agent has attached its programs and reads their events
        ARTIFACTS.mkdir(exist_ok=True)
        yield SimpleNamespace(base=base, containers=containers, target_port=target.getsockname()[1], env=env,
                              manage=manage, tmp=tmp, forbidden=str(forbidden), secrets=str(secrets),
                              netns=netns)  # fmt: skip
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        for c in containers.values():
            c.remove()
        target.close()
        subprocess.run([sys.executable, "manage.py", "runagent", "--uninstall", "--pin-root", pins], cwd=ROOT, env=env,
                       capture_output=True)  # fmt: skip
        stack.close()


def login(page, base, user):
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
