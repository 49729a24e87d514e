"""Kernel-test helpers: loopback targets, connects from inside a cgroup, and an Enforcer
confined to the test's own cgroups and pins."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.ingest import ingest_batch
from monitor.kernel.enforcer import Enforcer
from monitor.testbed import DnsServer, SimulatedContainer, listen

from . import runtimes


@pytest.fixture
def v6_listener():
    """A listener on [::1] that accepts and closes; yields its port."""
    sock = listen("::1", 0)
    yield sock.getsockname()[1]
    sock.close()


ROOT = Path(__file__).resolve().parents[2]
CONNECT = "import sys; from monitor.testbed import connect_once as c; print(c(sys.argv[1], int(sys.argv[2])))"


async def deliver_until(agent, node, done, timeout=5.0):
    """Play the uplink: number and store what the agent queued until done() holds."""
    seq = node.last_seq  # numbering goes on across calls (a number used again is a duplicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = []
        while agent.outbox:
            seq += 1
            batch.append(agent.outbox.popleft() | {"seq": seq})
        if batch:
            result = await sync_to_async(ingest_batch)(node, batch)
            assert not result.rejected
        if await sync_to_async(done)():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not seen within {timeout}s")


def connect_from(container, host: str, port: int) -> int:
    """connect() from inside the container's cgroup: 0 or the errno (1 = EPERM)."""
    proc = container.spawn([sys.executable, "-c", CONNECT, host, str(port)], cwd=ROOT, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=10)
    return int(out)


@pytest.fixture
def targets():
    """Listeners on 127.8.8.8 and 127.10.10.5 (same port) and [::1] (two ports)."""
    a = listen("127.8.8.8", 0)
    port = a.getsockname()[1]
    socks = [a, listen("127.10.10.5", port), listen("::1", 0), listen("::1", 0)]
    yield SimpleNamespace(port=port, v6_ports=[s.getsockname()[1] for s in socks[2:]])
    for s in socks:
        s.close()


@pytest.fixture
def enforcement(kernel, cgroup_parent, tmp_path):
    """An Enforcer confined to this test's cgroups and pin root; everything it attached or
    pinned, and every container made through it, is gone afterwards (checked)."""
    pin_root = f"/sys/fs/bpf/{cgroup_parent.removesuffix('.slice')}"
    made = []

    def container(name, runtime_prefix="docker"):
        made.append(SimulatedContainer(name, cgroup_parent, str(tmp_path), runtime_prefix).create())
        return made[-1]

    enforcer = Enforcer(pin_root=pin_root, scope=f"/{cgroup_parent}/*", docker_roots=(str(tmp_path),),
                        dns_resolvers=(DNS_SERVER,))  # fmt: skip
    yield SimpleNamespace(enforcer=enforcer, container=container, pin_root=pin_root, parent=cgroup_parent)
    try:
        enforcer.uninstall()
        leftover = [cg for cg, _ in enforcer.attachments() if cgroup_parent in cg]
    finally:
        for c in made:
            c.remove()
    assert not os.path.exists(pin_root), "pins left behind"
    assert not leftover, f"attachments left behind: {leftover}"


EPERM = 1
NETPROBE = Path(__file__).with_name("netprobe.c")


@pytest.fixture(scope="session")
def netprobe(tmp_path_factory):
    """tests/kernel/netprobe.c built static (it also runs inside a busybox container image)."""
    out = tmp_path_factory.mktemp("netprobe") / "netprobe"
    subprocess.run(["clang", "-O2", "-static", "-Wall", "-o", str(out), str(NETPROBE)], check=True)
    return out


def netprobe_in(container, probe, op: str, host: str, port: int) -> int:
    """One netprobe call from inside a (simulated) container: 0 or the errno."""
    proc = container.spawn([str(probe), op, host, str(port)], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=10)
    return int(out)


DNS_SERVER = "127.53.53.53"  # the tests' DNS server (loopback: no query leaves the machine)


@pytest.fixture
def resolver():
    """The test's DNS server on loopback, with listeners behind the names it gives."""
    socks = [listen(f"127.20.0.{i}", 0) for i in range(1, 2)]
    port = socks[0].getsockname()[1]
    socks += [listen(f"127.20.0.{i}", port) for i in range(2, 10)]
    with DnsServer(DNS_SERVER, ttl=30) as server:
        server.set("api.corp.test", "127.20.0.1")
        server.set("blocked.test", "127.20.0.2")
        server.set("ok.test", "127.20.0.3")
        server.set("deep.evil.test", "127.20.0.4")
        server.set("short.test", "127.20.0.5", ttl=1)
        server.set("late.test", "127.20.0.6")
        server.set("forever.test", "127.20.0.8", ttl=2**31 - 1)
        yield SimpleNamespace(server=server, port=port)
    for s in socks:
        s.close()


@pytest.fixture
def image_extra():
    """Files a test module adds to the runtimes' image (runtimes.image_tar): none by default."""
    return {}


@pytest.fixture(params=["docker", "podman"])
def runtime(request, kernel, enforcement, netprobe, image_extra):
    """A real Docker or Podman (tests/kernel/runtimes.py) confined to this test's cgroup, with
    the busybox image (and the module's `image_extra`); everything it made is removed after."""
    problem = runtimes.available(request.param)
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{request.param} test cannot run in CI: {problem}")
        pytest.skip(problem)
    kind = runtimes.Docker if request.param == "docker" else runtimes.Podman
    rt = kind(enforcement.parent, runtimes.image_tar(str(netprobe), image_extra))
    try:
        yield rt
    finally:
        rt.close()
        runtimes.remove_cgroups(enforcement.parent)


async def runtime_agent(runtime, enforcement, prefix: str, policy: list[dict]):
    """(node, agent) for a test with a real runtime: a node of its own, and an agent over the
    test's enforcer that reads the runtime's metadata, with `policy` as version 1."""
    from dashboard.fleet.models import Node
    from monitor.agent import Agent

    node = await sync_to_async(Node.objects.create)(name=f"{prefix}-{uuid.uuid4().hex[:6]}",
                                                    token_hash=uuid.uuid4().hex * 2)  # fmt: skip
    enforcer = enforcement.enforcer
    enforcer.docker_roots = enforcer.podman_roots = (runtime.data_root,)
    agent = Agent(backends=(), docker_roots=(runtime.data_root,), podman_roots=(runtime.data_root,), enforcer=enforcer)
    agent.set_policy(1, policy)
    return node, agent
