"""Unix sockets by path, on the real kernel: a `unix_path` deny makes connect() (and a
datagram's sendto()) fail with EPERM in the containers it names, under the path's /run and
/var/run spellings, for an abstract name too, and in real Docker and Podman containers
with the host's socket mounted in (as /var/run/docker.sock would be)."""

import asyncio
import os
import socket
import subprocess
import sys
import uuid

import pytest

from dashboard.events.models import ProcessEvent, Violation
from monitor.kernel import unix_hook
from monitor.rules import RuleSet

from .conftest import ROOT, deliver_until, runtime_agent
from .test_dns_names import run_agent
from .test_enforce_agent import stop
from .test_first_call import cgroups_made

pytestmark = pytest.mark.kernel
EPERM = 1

CONNECT = """
import socket, sys
for kind, name in zip(*[iter(sys.argv[1:])] * 2):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM if kind == "stream" else socket.SOCK_DGRAM)
    address = "\\0" + name[1:] if name.startswith("@") else name
    try:
        s.connect(address) if kind == "stream" else s.sendto(b"x", address)
        print(0, flush=True)
    except OSError as exc:
        print(exc.errno, flush=True)
"""


def reach(container, *pairs: tuple[str, str]) -> list[int]:
    argv = [sys.executable, "-c", CONNECT, *[x for p in pairs for x in p]]
    proc = container.spawn(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    return [int(x) for x in out.split()]


@pytest.fixture
def sockets():
    """A stream and a datagram socket under /run (also reached as /var/run), and an abstract one."""
    tag = uuid.uuid4().hex[:8]
    top, abstract = f"/run/crossedge-test-{tag}", f"crossedge-test-{tag}"
    os.makedirs(top)
    made = []
    try:
        for kind, name in ((socket.SOCK_STREAM, f"{top}/api.sock"), (socket.SOCK_DGRAM, f"{top}/log.sock"),
                           (socket.SOCK_STREAM, f"\0{abstract}")):  # fmt: skip
            made.append(socket.socket(socket.AF_UNIX, kind))
            made[-1].bind(name)
            if kind == socket.SOCK_STREAM:
                made[-1].listen(64)
        yield top, f"@{abstract}"
    finally:
        for s in made:
            s.close()
        for name in os.listdir(top):
            os.unlink(os.path.join(top, name))
        os.rmdir(top)


def test_a_unix_socket_deny_refuses_connect_and_sendto_by_its_paths(enforcement, sockets):
    top, abstract = sockets
    app, other = enforcement.container("unix-app"), enforcement.container("unix-other")
    enforcement.enforcer.start()
    assert not enforcement.enforcer.unix_error, enforcement.enforcer.unix_error
    var_run = top.replace("/run/", "/var/run/", 1)
    rules = [
        {"id": "no-api", "match": {"container": "unix-app", "unix_path": f"{var_run}/api.sock"}, "action": "deny"},
        {"id": "no-log", "match": {"container": "unix-app", "unix_path": f"{top}/log.sock"}, "action": "deny"},
        {"id": "no-abstract", "match": {"container": "unix-app", "unix_path": abstract}, "action": "deny"},
    ]
    enforcement.enforcer.sync(RuleSet.from_specs(rules, 1))
    tried = [("stream", f"{top}/api.sock"), ("stream", f"{var_run}/api.sock"), ("dgram", f"{top}/log.sock"),
             ("dgram", f"{var_run}/log.sock"), ("stream", abstract)]  # fmt: skip
    assert reach(other, *tried) == [0] * 5, "another container is not named"
    assert reach(app, *tried) == [EPERM] * 5
    counters = enforcement.enforcer.counters()
    assert (counters["no-api"], counters["no-log"], counters["no-abstract"]) == (2, 2, 1)
    enforcement.enforcer.sync(RuleSet.from_specs([], 2))
    assert reach(app, *tried) == [0] * 5, "the rules gone"


def test_the_unix_programs_go_with_the_generation(enforcement):
    enforcement.container("unix-gone")
    enforcement.enforcer.start()
    links = [
        n for n in os.listdir(os.path.dirname(enforcement.enforcer.layout.link("x"))) if n.startswith("crossedge_unix")
    ]
    assert len(links) == 2 * len(enforcement.enforcer.targets), links
    assert os.path.exists(enforcement.enforcer.layout.prog(unix_hook.UNIX_CONNECT))
    # (the fixture checks that uninstall leaves no program attached and nothing pinned)


@pytest.mark.django_db(transaction=True)
async def test_in_real_containers_the_hosts_socket_mounted_in_is_refused(runtime, enforcement, sockets):
    """Docker and Podman, the test's socket mounted in as /var/run/docker.sock would be: refused
    by that name and by /run/docker.sock (which the image lacks: refused before any lookup)."""
    top, _abstract = sockets
    tag = uuid.uuid4().hex[:6]
    name, other = f"nosock-{tag}", f"sock-ok-{tag}"
    rules = [{"id": "no-runtime-socket", "match": {"container": "nosock-*", "unix_path": "/var/run/docker.sock"},
              "action": "deny"}]  # fmt: skip
    node, agent = await runtime_agent(runtime, enforcement, "rtunix", rules)
    mount = ("-v", f"{top}/api.sock:/var/run/docker.sock")
    script = "/bin/netprobe unix /var/run/docker.sock; /bin/netprobe unix /run/docker.sock"
    with cgroups_made(enforcement.enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script], options=mount)
            assert done.stdout.decode().split() == [str(EPERM)] * 2, done.stderr.decode()
            fine = await asyncio.to_thread(runtime.run, other, ["/bin/netprobe", "unix", "/var/run/docker.sock"],
                                           options=mount)  # fmt: skip
            assert fine.stdout.decode().split() == ["0"], fine.stderr.decode()

            def raised():
                return Violation.objects.filter(kind="socket", container__name=name).count() >= 2

            await deliver_until(agent, node, raised, timeout=10)
        finally:
            await stop(runner)
    found = [v async for v in Violation.objects.filter(kind="socket", container__name=name).order_by("target")]
    assert [v.target for v in found] == ["unix socket /run/docker.sock (stream)",
                                         "unix socket /var/run/docker.sock (stream)"]  # fmt: skip
    assert all(v.enforced and v.rule_id == "no-runtime-socket" for v in found)
    assert await ProcessEvent.objects.filter(kind="socket", container__name=name).acount() >= 1
