"""A new container is judged from its first call, with no race against the agent.

Without any agent: a process that joins a container cgroup made a moment ago and connects
at once (no exec, no rescan) is refused by every rule that names no container, wherever
the runtime put the cgroup (systemd and cgroupfs forms, Podman's, a new pod slice, a
cgroup nested in a container); the kernel classifies exactly what the agent calls a
container. The same holds for an unconnected UDP sendto() and for io_uring's connect.
With the agent: a rule naming the container applies to the first exec there, held
until the agent has listed it; a hold the agent cannot settle ends after MAX_HOLD and the
call it let through is reported as a deny NOT enforced, with the reason.
"""

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import sys

import pytest

from monitor.agent import Agent
from monitor.cgroups import cgroup_id
from monitor.containers import is_container_cgroup
from monitor.rules import RuleSet

from .conftest import EPERM, connect_from, netprobe_in
from .test_enforce_agent import run_agent, stop

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]

CID = "5e" * 32
POD = "0d5a8a3e_1f2b_4c3d_9e8f_7a6b5c4d3e2f"
WILDCARD = [
    {"id": "deny-5", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"},
    {"id": "deny-v6", "match": {"dest_ip": "::1/128", "dest_port": 1053}, "action": "deny"},
]
# (cgroup path below the test's parent, whether the agent calls it a container)
LAYOUTS = [
    (f"docker-{CID}.scope", True),  # systemd driver
    (f"docker/{CID}", True),  # Docker's cgroupfs driver, /docker made with its first container
    (f"libpod_parent/libpod-{CID}", True),  # Podman's cgroupfs form
    (f"machine.slice/libpod-{CID}.scope", True),
    (f"kubepods-besteffort.slice/kubepods-besteffort-pod{POD}.slice/cri-containerd-{CID}.scope", True),  # new pod
    (f"crio-{CID}.scope/app", True),  # a cgroup made inside a container
    ("sshd.service", False),
    (f"libpod-conmon-{CID}.scope", False),
    (f"docker-{CID[:-2]}.scope", False),  # 62 hex digits
]


@contextlib.contextmanager
def cgroups_made(root: str, paths: list[str]):
    """Make these cgroup directories (parents first); remove every one made, deepest first."""
    made = []
    try:
        for path in paths:
            parts = path.split("/")
            for depth in range(1, len(parts) + 1):
                full = os.path.join(root, *parts[:depth])
                if not os.path.isdir(full):
                    os.mkdir(full)
                    made.append(full)
        yield
    finally:
        for full in sorted(made, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(full)


def join_and_call(cgroup_dir: str, family: int, kind: int, address: tuple) -> int:
    """fork; the child joins the cgroup and makes its call at once (no exec): 0 or the errno."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
            with socket.socket(family, kind) as sock:
                if kind == socket.SOCK_DGRAM:
                    try:
                        sock.sendto(b"x", address)
                        code = 0
                    except OSError as exc:
                        code = exc.errno
                else:
                    code = sock.connect_ex(address)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_the_kernel_judges_a_new_container_before_anything_lists_it(enforcement, targets):
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(RuleSet.from_specs(WILDCARD, 1))
    parent = os.path.join(enforcer.cgroup_root, enforcement.parent)
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        enforcer.rescan()  # the attach point exists now; no rescan follows while the test runs
        tried = {path: _try(enforcer, parent, path, targets.port) for path, _ in LAYOUTS}
    for path, container in LAYOUTS:
        calls, monitored, agent_says = tried[path]
        assert monitored == container == agent_says, path  # the kernel's names are the agent's
        assert calls == ((EPERM, EPERM, EPERM, 0) if container else (0, 0, 0, 0)), path
    assert not enforcer.pending()  # no agent reads the lifecycle records: nothing is held


def _try(enforcer, parent: str, path: str, port: int):
    """In a cgroup made now: each call's result, whether the kernel monitors it, whether
    the agent calls it a container (or a cgroup inside one)."""
    with cgroups_made(parent, [path]):
        where = os.path.join(parent, path)
        calls = (
            join_and_call(where, socket.AF_INET, socket.SOCK_STREAM, ("127.10.10.5", port)),
            join_and_call(where, socket.AF_INET, socket.SOCK_DGRAM, ("127.10.10.5", 53)),
            join_and_call(where, socket.AF_INET6, socket.SOCK_DGRAM, ("::1", 1053)),
            join_and_call(where, socket.AF_INET, socket.SOCK_STREAM, ("127.8.8.8", port)),
        )
        monitored = cgroup_id(where) in _monitored(enforcer)
    rel = os.path.relpath(where, enforcer.cgroup_root)
    return calls, monitored, any(is_container_cgroup("/" + rel.rsplit("/", n)[0]) for n in range(2))


def _monitored(enforcer) -> set[int]:
    enforcer._read_monitored()
    return enforcer.monitored


def test_io_uring_connect_goes_through_the_same_hook(enforcement, targets, netprobe):
    enforcer = enforcement.enforcer
    app = enforcement.container("edge-app-uring")
    enforcer.start()
    enforcer.sync(RuleSet.from_specs(WILDCARD, 1))
    assert netprobe_in(app, netprobe, "uring", "127.10.10.5", targets.port) == EPERM
    assert netprobe_in(app, netprobe, "uring", "127.8.8.8", targets.port) == 0
    assert netprobe_in(app, netprobe, "connect", "127.10.10.5", targets.port) == EPERM
    assert enforcer.counters()["deny-5"] == 2


NAMED = [{"id": "deny-late", "match": {"container": "edge-app-late", "dest_ip": "127.10.10.5/32"}, "action": "deny"}]
CONNECT = "from monitor.testbed import connect_once as c; import sys; print(c(sys.argv[1], int(sys.argv[2])))"


async def first_calls(enforcement, agent, targets, names):
    """Each named container made after the agent started; the result of its first call."""
    runner = await run_agent(agent)
    results = {}
    try:
        for name in names:
            late = enforcement.container(name)
            proc = late.spawn([sys.executable, "-c", CONNECT, "127.10.10.5", str(targets.port)], stdout=subprocess.PIPE)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
            results[name] = int(out)
        for _ in range(30):  # until the agent has every call
            if sum(1 for e in agent.outbox if e.get("dest_ip") == "127.10.10.5") >= len(names):
                break
            await asyncio.sleep(0.1)
    finally:
        await stop(runner)
    return results


async def test_a_rule_naming_the_container_applies_to_its_first_exec(enforcement, targets, tmp_path, monkeypatch):
    monkeypatch.setattr("monitor.agent.KERNEL_POLL", 60.0)  # no periodic rescan: only the hold lists it
    enforcement.container("edge-app-prod")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, NAMED)
    results = await first_calls(enforcement, agent, targets, ["edge-app-late", "edge-app-other"])
    assert results == {"edge-app-late": EPERM, "edge-app-other": 0}
    holds = agent.health()["holds"]
    assert holds["held"] == holds["released"] == 2 and "expired" not in holds and holds["pending"] == 0
    calls = {e["container"]["name"]: e for e in agent.outbox if e.get("dest_ip") == "127.10.10.5"}
    assert (calls["edge-app-late"]["verdict"], calls["edge-app-late"]["enforced"]) == ("deny", True)
    assert calls["edge-app-other"]["verdict"] == "allow"
    assert agent.health()["not_enforced"] == 0
    assert not await asyncio.to_thread(enforcement.enforcer.pending)


async def test_a_held_exec_is_released_by_its_own_record_whatever_the_lifecycle_pipe_does(
    enforcement, targets, tmp_path, monkeypatch
):
    """The lifecycle and process records travel on two pipes: under load either can come
    first. A hold must end on the exec record alone (CI once saw a hold wait out MAX_HOLD)."""
    monkeypatch.setattr("monitor.agent.KERNEL_POLL", 60.0)
    monkeypatch.setattr(Agent, "handle_lifecycle", lambda self, backend, record: None)  # never arrives
    enforcement.container("edge-app-prod")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, NAMED)
    results = await first_calls(enforcement, agent, targets, ["edge-app-late", "edge-app-other"])
    assert results == {"edge-app-late": EPERM, "edge-app-other": 0}
    holds = agent.health()["holds"]
    assert holds["held"] == holds["released"] == 2 and "expired" not in holds and holds["pending"] == 0
    assert holds["max_ms"] < 2000  # listed at once, not at MAX_HOLD
    assert not await asyncio.to_thread(enforcement.enforcer.pending)


async def test_a_hold_the_agent_cannot_settle_ends_after_max_hold(enforcement, targets, tmp_path, monkeypatch):
    monkeypatch.setattr("monitor.agent.KERNEL_POLL", 60.0)
    monkeypatch.setattr("monitor.agent.MAX_HOLD", 0.3)
    monkeypatch.setattr(type(enforcement.enforcer), "judged", lambda self, cgid: False)
    enforcement.container("edge-app-prod")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, NAMED)
    results = await first_calls(enforcement, agent, targets, ["edge-app-other"])
    assert results == {"edge-app-other": 0}  # went on: the agent never blocks a container for long
    holds = agent.health()["holds"]
    assert holds["held"] == holds["released"] == holds["expired"] == 1 and holds["max_ms"] >= 300


async def test_a_deny_the_kernel_does_not_apply_is_reported_not_enforced_with_why(enforcement, targets, tmp_path):
    """A container the rule names, observed below the attach point but outside the enforce
    scope: the kernel lets its call through, and the agent must not call that refused."""
    enforcement.enforcer.scope = f"/{enforcement.parent}/docker-*"
    enforcement.container("edge-app-prod")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    short_id = hashlib.sha256(f"{enforcement.parent}/edge-app-late".encode()).hexdigest()[:12]  # no metadata
    agent.set_policy(1, [{"id": "deny-late", "match": {"container": short_id}, "action": "deny"}])
    runner = await run_agent(agent)
    try:
        outside = enforcement.container("edge-app-late", runtime_prefix="cri-containerd")
        result = await asyncio.to_thread(connect_from, outside, "127.10.10.5", targets.port)
        for _ in range(30):
            if any(e.get("dest_ip") == "127.10.10.5" for e in agent.outbox):
                break
            await asyncio.sleep(0.1)
    finally:
        await stop(runner)
    assert result == 0
    [call] = [e for e in agent.outbox if e.get("dest_ip") == "127.10.10.5"]
    assert (call["verdict"], call["enforced"], call["result"]) == ("deny", False, None)
    assert call["unenforced"] == "not a container in the enforce scope"
    assert agent.health()["not_enforced"] == 1
    assert agent.health()["not_enforced_reasons"] == {"not a container in the enforce scope": 1}
