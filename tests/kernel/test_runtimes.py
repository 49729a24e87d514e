"""Real Docker and real Podman: no container slips through.

On a node where no container ran before (the runtime's parent cgroup does not exist yet),
`--rm` containers whose only action is one call: a connect() to a denied network, a
connect() denied by a rule naming the container (and the same call from another
container, let through), and one unconnected UDP sendto() to a denied address. Each denied
call gets EPERM inside the container and is stored as one refused violation with the
container's name and image within a second of the container's exit; no deny is left
unenforced, and no hold ran out.
"""

import asyncio
import time
import uuid

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import ConnectionEvent, ProcessEvent, Violation
from monitor import agent as agent_module
from monitor.files import DEFAULT_WATCHES

from . import runtimes
from .conftest import DNS_SERVER, deliver_until, runtime_agent
from .test_enforce_agent import run_agent, stop
from .test_first_call import cgroups_made

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]

EPERM = "1"


@pytest.mark.parametrize("slow_agent", [False, True], ids=["agent", "slow-agent"])
async def test_a_containers_first_call_is_refused_and_reported_with_its_name_and_image(
    runtime, enforcement, targets, slow_agent, monkeypatch
):
    """With a slow agent (0.5 s to list a new container, slower than the runtime takes to
    start it) the container's entrypoint is held at its exec until the agent has listed it."""
    if slow_agent:
        rescan = type(enforcement.enforcer).rescan

        def slow_rescan(self, force=False):
            time.sleep(0.5)
            return rescan(self, force)

        monkeypatch.setattr(type(enforcement.enforcer), "rescan", slow_rescan)
        # the hold's safety valve (5 s) is not what this tests: several slow rescans on a
        # loaded 2-core machine can reach it, and an expired hold would let the call through
        monkeypatch.setattr(agent_module, "MAX_HOLD", 10.0)
    tag = uuid.uuid4().hex[:6]
    web, other, first, dns = (f"{n}-{tag}" for n in ("web", "other", "first", "dns"))
    policy = [
        {"id": "deny-net", "match": {"dest_ip": "127.99.0.0/16"}, "action": "deny"},
        {"id": "deny-web", "match": {"container": "web-*", "dest_port": targets.port}, "action": "deny"},
        {"id": "deny-dns", "match": {"dest_ip": "127.53.0.0/16", "dest_port": 53}, "action": "deny"},
    ]
    enforcer = enforcement.enforcer
    node, agent = await runtime_agent(runtime, enforcement, "rt", policy)
    calls = [
        (first, ["connect", "127.99.1.1", "443"], EPERM),
        (web, ["connect", "127.8.8.8", str(targets.port)], EPERM),
        (other, ["connect", "127.8.8.8", str(targets.port)], "0"),
        (dns, ["sendto", "127.53.0.1", "53"], EPERM),
    ]
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):  # the scope's directory, nothing below
        runner = await run_agent(agent)
        try:
            for name, argv, expected in calls:
                done = await asyncio.to_thread(runtime.run, name, ["/bin/netprobe", *argv])
                exited = time.monotonic()
                assert (done.returncode, done.stdout.decode().strip()) == (0, expected), done.stderr.decode()
                if expected == EPERM:
                    await deliver_until(agent, node, lambda n=name: _violation(n), timeout=1.0)
                    assert time.monotonic() - exited < 1.0
            await deliver_until(agent, node, lambda: ConnectionEvent.objects.filter(container__name=other).exists())
        finally:
            await stop(runner)
    health = agent.health()
    print(f"{runtime.name}: listed within {health['holds']['list_ms']} ms, holds {health['holds']}")
    assert health["not_enforced"] == 0 and "expired" not in health["holds"] and health["holds"]["pending"] == 0
    if slow_agent:  # each container's entrypoint waited for the agent (runc and crun exec it once)
        assert health["holds"]["held"] == health["holds"]["released"] == len(calls)

    def check():
        image = runtimes.IMAGE if runtime.name == "docker" else f"localhost/{runtimes.IMAGE}"
        refused = ((first, "deny-net", "connect"), (web, "deny-web", "connect"), (dns, "deny-dns", "sendmsg"))
        for name, rule, op in refused:
            [v] = Violation.objects.filter(container__name=name).select_related("container", "event")
            assert (v.rule_id, v.action, v.enforced, v.unenforced, v.event.count) == (rule, "deny", True, "", 1)
            assert (v.container.runtime, v.container.image, v.event.result, v.event.op) == (runtime.name, image, -1, op)
        [ok] = ConnectionEvent.objects.filter(container__name=other)
        assert (ok.verdict, ok.result, ok.unenforced) == ("allow", None, "")
        assert not ConnectionEvent.objects.exclude(unenforced="").exists()

    await sync_to_async(check)()


def _violation(name: str) -> bool:
    return Violation.objects.filter(container__name=name, enforced=True).exists()


async def test_a_containers_processes_are_reported_and_a_forbidden_binary_is_killed(runtime, enforcement):
    """A real container's shell spawns a shell (reported with its parent and exit status) and
    then a binary an exec rule forbids, which is killed before it runs: the shell sees 137."""
    tag = uuid.uuid4().hex[:6]
    name = f"proc-{tag}"
    enforcer = enforcement.enforcer
    policy = [{"id": "no-probe", "match": {"container": "proc-*", "binary": "/bin/netprobe"}, "action": "deny"}]
    node, agent = await runtime_agent(runtime, enforcement, "rtp", policy)
    script = "/bin/sh -c 'exit 3'; echo shell $?; /bin/netprobe connect 127.8.8.8 1; echo probe $?"
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script])
            assert done.stdout.decode().split("\n")[:2] == ["shell 3", "probe 137"], done.stderr.decode()
            await deliver_until(agent, node, lambda: Violation.objects.filter(rule_id="no-probe").exists(), 5)
            await deliver_until(agent, node, lambda: ProcessEvent.objects.filter(kind="exit", binary="").count() >= 3)
        finally:
            await stop(runner)

    def check():
        execs = ProcessEvent.objects.filter(container__name=name, kind="exec")
        # (runc may exec a copy of itself in the container first: /dev/fd/N, which is shown too)
        entry, shell = execs.get(args=["/bin/sh", "-c", script]), execs.get(args=["/bin/sh", "-c", "exit 3"])
        assert (entry.binary, entry.given) == ("/bin/busybox", "/bin/sh")  # the file that ran, and its name
        assert (shell.binary, shell.ppid, shell.parent_binary) == ("/bin/busybox", entry.pid, "/bin/busybox")
        assert ProcessEvent.objects.get(kind="exit", pid=shell.pid, start_ns=shell.start_ns).exit_text == "exit 3"
        v = Violation.objects.get(rule_id="no-probe")
        assert (v.kind, v.target, v.enforced, v.container.name, v.container.runtime) == (
            "exec", "/bin/netprobe", True, name, runtime.name)  # fmt: skip
        assert v.process.ppid == entry.pid

    await sync_to_async(check)()


async def test_a_containers_file_opens_are_reported_and_a_forbidden_read_is_killed(runtime, enforcement):
    """In a real container, with the node's default watches: a read of /etc/shadow and a
    write under /etc (the container's own) are reported with access and result; a file rule
    kills `cat` at its open, before it prints a byte: the shell sees 137, also when `cat` names
    the file relative to its working directory."""
    tag = uuid.uuid4().hex[:6]
    name = f"files-{tag}"
    enforcer = enforcement.enforcer
    enforcer.watches = DEFAULT_WATCHES
    node, agent = await runtime_agent(runtime, enforcement, "rtf", [
        {"id": "no-secret", "match": {"container": "files-*", "path": "/etc/crossedge-secret", "access": ["read"]},
         "action": "deny"}])  # fmt: skip
    script = (
        "/bin/busybox cat /etc/shadow; echo shadow $?; echo top > /etc/crossedge-secret; echo wrote $?; "
        "/bin/busybox cat /etc/crossedge-secret; echo cat $?; cd /etc; /bin/busybox cat crossedge-secret; echo rel $?"
    )
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script])
            assert done.stdout.decode().split("\n")[:4] == ["shadow 1", "wrote 0", "cat 137", "rel 137"], (
                done.stderr.decode()
            )
            await deliver_until(agent, node, lambda: Violation.objects.filter(rule_id="no-secret").count() >= 2, 5)
            await deliver_until(
                agent, node, lambda: ProcessEvent.objects.filter(kind="open", path="/etc/shadow").exists(), 5
            )
        finally:
            await stop(runner)

    def check():
        opens = ProcessEvent.objects.filter(container__name=name, kind="open")
        shadow = opens.get(path="/etc/shadow")
        assert (shadow.access, shadow.result_text, shadow.binary) == ("read", "ENOENT", "/bin/busybox")
        # the second cat's exec was folded in the kernel with the first (one binary, one parent)
        wrote = opens.get(path="/etc/crossedge-secret", access="write,create,truncate")
        assert (wrote.result_text, wrote.binary, wrote.verdict) == ("ok", "/bin/busybox", "allow")
        # the second read names it relatively (cd /etc): judged by the path it resolved to
        for v in Violation.objects.filter(rule_id="no-secret"):
            assert (v.kind, v.target, v.enforced, v.container.name, v.container.runtime) == (
                "open", "/etc/crossedge-secret (read)", True, name, runtime.name)  # fmt: skip
            assert v.process.binary == "/bin/busybox" and v.process.ppid == wrote.pid
        assert not ProcessEvent.objects.filter(kind="open").exclude(container__name=name).exists()

    await sync_to_async(check)()


async def test_a_container_that_resolves_a_denied_name_is_refused_and_its_calls_show_names(
    runtime, enforcement, resolver
):
    """busybox nslookup asks the test's DNS server from inside a real container; netprobe
    then connects to each answer: the name under a deny rule gets EPERM, the other goes
    through, and both connections are stored with the names the container resolved."""
    tag = uuid.uuid4().hex[:6]
    name = f"dns-{tag}"
    enforcer = enforcement.enforcer
    node, agent = await runtime_agent(
        runtime, enforcement, "rtd", [{"id": "no-blocked", "match": {"dest_fqdn": "blocked.test"}, "action": "deny"}]
    )
    script = "; ".join(
        f"/bin/busybox nslookup {host} {DNS_SERVER} > /dev/null; /bin/netprobe connect {ip} {resolver.port}"
        for host, ip in (("blocked.test", "127.20.0.2"), ("ok.test", "127.20.0.3"))
    )
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script])
            assert done.stdout.decode().split() == [EPERM, "0"], done.stderr.decode()
            await deliver_until(
                agent, node, lambda: ConnectionEvent.objects.filter(container__name=name).count() >= 3, 5
            )
        finally:
            await stop(runner)

    def check():
        rows = dict(ConnectionEvent.objects.filter(container__name=name).values_list("dest_ip", "dest_name"))
        assert rows == {"127.20.0.2": "blocked.test", "127.20.0.3": "ok.test", DNS_SERVER: ""}  # asked: no name
        v = Violation.objects.get(rule_id="no-blocked", container__name=name)
        assert v.enforced and v.dest_name == "blocked.test"

    await sync_to_async(check)()


async def test_a_container_that_scans_as_it_starts_is_held_and_reported_once(runtime, enforcement):
    """A real container whose entrypoint at once connects to 200 closed loopback ports: the
    50th new destination within the second trips the scan rule, which refuses that call and
    the rest in the kernel; the agent stores one scan violation and rows counting every call."""
    tag = uuid.uuid4().hex[:6]
    name = f"scan-{tag}"
    enforcer = enforcement.enforcer
    policy = [{"id": "scan-guard", "match": {}, "limit": {"new_destinations": 50}, "action": "deny", "hold": 30}]
    node, agent = await runtime_agent(runtime, enforcement, "rts", policy)
    script = "for p in $(/bin/busybox seq 20000 20199); do /bin/netprobe connect 127.77.0.1 $p; done"
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script])
            assert done.stdout.decode().split() == ["111"] * 49 + [EPERM] * 151, done.stderr.decode()
            await asyncio.sleep(1.5)  # the next reading of the scan's sums

            def stored():
                counts = ConnectionEvent.objects.filter(container__name=name).values_list("count", flat=True)
                return sum(counts) >= 200

            await deliver_until(agent, node, stored, 10)
        finally:
            await stop(runner)

    def check():
        rows = ConnectionEvent.objects.filter(container__name=name, dest_ip="127.77.0.1")
        assert sum(rows.values_list("count", flat=True)) == 200  # every call, once
        assert rows.filter(dest_port_hi__isnull=False).exists()  # the held calls, summed
        (v,) = Violation.objects.filter(container__name=name)
        assert (v.kind, v.rule_id, v.enforced) == ("scan", "scan-guard", True)

    await sync_to_async(check)()
