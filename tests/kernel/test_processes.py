"""Processes in a container through the real kernel, agent and dashboard: a shell spawned by
a server process is reported with its parent, exits carry their status, execs are counted
in the kernel, an exec rule kills a forbidden binary before it prints anything (and the
violation says so), a rule the kernel cannot judge is reported as not enforced, and nothing
is reported for processes outside the scope."""

import asyncio
import os
import shutil
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum

from dashboard.events.models import ProcessEvent, Violation
from dashboard.events.process_tree import process_tree
from dashboard.fleet.models import Container, Node
from monitor.agent import Agent
from monitor.kernel import processes

from .conftest import ROOT, deliver_until
from .test_enforce_agent import run_agent as running
from .test_enforce_agent import stop

PYTHON, SH, TRUE = (os.path.realpath(p) for p in (sys.executable, "/bin/sh", "/bin/true"))  # files, not names

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]

SERVER = r"""
import subprocess, sys
out = subprocess.run(["/bin/sh", "-c", "exit 3"]).returncode  # a shell spawned by the server
print(out, flush=True)
"""


def stored(**match):
    return lambda: ProcessEvent.objects.filter(**match).exists()


async def test_a_shell_spawned_by_a_server_is_reported_with_its_parent_and_exit(enforcement, tmp_path):
    node = await sync_to_async(Node.objects.create)(name="proc-node", token_hash="p" * 64)
    app = enforcement.container("edge-app-prod")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [])
    runner = await running(agent)
    try:
        server = app.spawn([sys.executable, "-c", SERVER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(server.communicate, timeout=20))[0].strip() == "3"
        outside = await asyncio.to_thread(subprocess.run, ["/bin/true"])  # this test's own process: not in scope
        await deliver_until(agent, node, stored(kind="exit", binary="", ppid=server.pid), timeout=10)
        await deliver_until(agent, node, stored(kind="exit", pid=server.pid), timeout=10)
        counts = await asyncio.to_thread(processes.exec_counts, enforcement.enforcer.layout)
    finally:
        await stop(runner)

    def check():
        [python] = ProcessEvent.objects.filter(kind="exec", pid=server.pid)
        assert python.binary == PYTHON and python.container.name == "edge-app-prod"  # the file that ran
        assert python.args[:2] == [sys.executable, "-c"]
        [shell] = ProcessEvent.objects.filter(kind="exec", ppid=server.pid)
        assert (shell.binary, shell.args, shell.comm) == (SH, ["/bin/sh", "-c", "exit 3"], "sh")
        assert shell.given == ("/bin/sh" if SH != "/bin/sh" else "")  # the name it was run by, when another
        assert shell.parent_binary == PYTHON and shell.parent_comm.startswith("python")
        [gone] = ProcessEvent.objects.filter(kind="exit", pid=shell.pid)
        assert gone.exit_text == "exit 3" and gone.lifetime_ns > 0 and gone.start_ns == shell.start_ns
        assert outside.returncode == 0 and not ProcessEvent.objects.filter(binary=TRUE).exists()
        assert not ProcessEvent.objects.exclude(container__name="edge-app-prod").exists()  # nothing outside scope
        container = Container.objects.get(name="edge-app-prod")
        [(parent, [root])] = process_tree(container)
        assert parent.endswith(f"[{os.getpid()}]")  # this test started the server
        assert root.binaries == [PYTHON] and [c.binaries for c in root.children] == [[SH]]
        assert counts[container.cgroup_id] >= 2  # python and the shell, counted in the kernel

    await sync_to_async(check)()


async def test_a_denied_binary_is_killed_before_it_prints_and_a_glob_is_reported(enforcement, tmp_path):
    node = await sync_to_async(Node.objects.create)(name="kill-node", token_hash="k" * 64)
    app = enforcement.container("edge-app-prod")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    forbidden, tool, watched = bin_dir / "forbidden", bin_dir / "watched-tool", bin_dir / "watched"
    for copy in (forbidden, tool, watched):
        shutil.copy("/bin/echo", copy)
    policy = [
        {"id": "no-forbidden", "severity": "high", "match": {"binary": str(forbidden)}, "action": "deny"},
        {"id": "glob-tool", "match": {"binary": f"{bin_dir}/*-tool", "container": "edge-*"}, "action": "deny"},
        {"id": "agent-tool", "match": {"binary": f"{bin_dir}/w?tched"}, "action": "deny"},
    ]
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(2, policy)
    runner = await running(agent)
    try:
        killed = app.spawn([str(forbidden), "you should never read this"], stdout=subprocess.PIPE, text=True)
        out, _ = await asyncio.to_thread(killed.communicate, timeout=10)
        assert (killed.returncode, out) == (-9, "")  # SIGKILL at exec: not one byte printed
        glob = app.spawn([str(tool), "you should never read this"], stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(glob.communicate, timeout=10)) == ("", None)  # a prefix and a suffix: killed
        ran = app.spawn([str(watched), "still runs"], stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(ran.communicate, timeout=10))[0] == "still runs\n"
        host = await asyncio.to_thread(subprocess.run, [str(forbidden), "outside"], capture_output=True, text=True)
        assert host.stdout == "outside\n"  # the same binary outside the scope is left alone
        await deliver_until(agent, node, lambda: Violation.objects.count() >= 3, timeout=10)
    finally:
        await stop(runner)

    def check():
        v = Violation.objects.get(rule_id="no-forbidden")
        assert (v.kind, v.target, v.enforced, v.unenforced, v.severity) == ("exec", str(forbidden), True, "", "high")
        assert v.process.pid == killed.pid and v.process.verdict == "deny"
        g = Violation.objects.get(rule_id="glob-tool")
        assert (g.kind, g.target, g.enforced, g.unenforced) == ("exec", str(tool), True, "")
        a = Violation.objects.get(rule_id="agent-tool")
        assert (a.kind, a.target, a.enforced) == ("exec", str(watched), False)
        assert "after the exec" in a.unenforced  # a glob only the agent judges: reported, never claimed
        [exit_] = ProcessEvent.objects.filter(kind="exit", pid=killed.pid)
        assert exit_.exit_text == "killed by signal 9"

    await sync_to_async(check)()


async def test_an_exec_rule_naming_a_new_container_kills_its_first_exec(enforcement, tmp_path, monkeypatch):
    """The container's entrypoint is held at exec until the agent has listed the container;
    an exec rule naming it is then judged on the held process, which is killed before it
    ran: the rule could not be in the kernel yet, and still nothing of it ran."""
    monkeypatch.setattr("monitor.agent.KERNEL_POLL", 60.0)  # no periodic rescan: only the hold lists it
    node = await sync_to_async(Node.objects.create)(name="hold-node", token_hash="h" * 64)
    enforcement.container("edge-app-prod")  # an attach point exists before the new container
    entry = tmp_path / "entrypoint"
    shutil.copy("/bin/echo", entry)
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [{"id": "no-entry", "match": {"container": "edge-app-late", "binary": str(entry)},
                          "action": "deny"}])  # fmt: skip
    runner = await running(agent)
    try:
        late = enforcement.container("edge-app-late")
        late_id = late.cgroup_id
        proc = late.spawn([str(entry), "must not print"], stdout=subprocess.PIPE, text=True)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
        other = enforcement.container("edge-app-other")
        fine = other.spawn([str(entry), "prints"], stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(fine.communicate, timeout=10))[0] == "prints\n"
        await deliver_until(agent, node, lambda: Violation.objects.filter(rule_id="no-entry").exists(), timeout=10)
        layout = enforcement.enforcer.layout
        assert late_id in await asyncio.to_thread(processes.exec_counts, layout)
        await asyncio.to_thread(late.remove)  # the container goes: its exec count leaves the bounded map
        for _ in range(60):
            if late_id not in await asyncio.to_thread(processes.exec_counts, layout):
                break
            agent._kernel_wakeup.set()  # this test stopped the periodic rescan: tick the loop
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the exec count of a removed container stayed in the map")
    finally:
        await stop(runner)
    assert (proc.returncode, out) == (-9, "")
    assert agent.health()["holds"]["held"] >= 2

    def check():
        v = Violation.objects.get(rule_id="no-entry")
        assert (v.kind, v.enforced, v.unenforced, v.container.name) == ("exec", True, "", "edge-app-late")

    await sync_to_async(check)()


LOOP = r"""
import os, sys
for _ in range(int(sys.argv[1])):
    os.waitpid(os.posix_spawn("/bin/true", ["/bin/true"], {}), 0)
os.waitpid(os.posix_spawn("/bin/false", ["/bin/false"], {}), 0)  # another binary, another status
print("done", flush=True)
"""


async def test_a_spawn_loop_is_counted_in_the_kernel_and_adds_up_exactly(enforcement, tmp_path):
    """2,000 execs of one binary by one parent: the kernel sends the first of each 100 ms
    and counts the rest with their group; the rows stored are few, and their counts add up
    to every exec and every exit, the odd one out reported on its own."""
    node = await sync_to_async(Node.objects.create)(name="loop-node", token_hash="l" * 64)
    app = enforcement.container("edge-app-prod")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [])
    runner = await running(agent)
    try:
        loop = app.spawn([sys.executable, "-c", LOOP, "2000"], stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(loop.communicate, timeout=60))[0] == "done\n"

        def all_stored():
            rows = ProcessEvent.objects.filter(ppid=loop.pid)
            return (rows.filter(kind="exit").aggregate(n=Sum("count"))["n"] or 0) >= 2001

        await deliver_until(agent, node, all_stored, timeout=15)
    finally:
        await stop(runner)

    def check():
        rows = ProcessEvent.objects.filter(ppid=loop.pid)
        execs = rows.filter(kind="exec", binary=TRUE)
        assert execs.aggregate(n=Sum("count"))["n"] == 2000 and execs.count() < 200  # counted, not sent
        [false] = rows.filter(kind="exec", binary=os.path.realpath("/bin/false"))
        assert false.count == 1
        exits = {e.exit_code: e for e in rows.filter(kind="exit")}
        assert sum(e.count for e in rows.filter(kind="exit", exit_code=0)) == 2000
        assert exits[256].count == 1 and exits[256].comm == "false"

    await sync_to_async(check)()
