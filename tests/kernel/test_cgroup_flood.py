"""A container cannot blind the node by making cgroups, on the real kernel: each cgroup made
inside a container takes a `monitored` entry, so past 1,024 in one container the maker is
killed (and a process moved into a cgroup made past the bound is killed too); the flooding
container's own cgroups stay judged, a container made after it is judged from its first
call, and removing cgroups gives their room back."""

import asyncio
import os
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async

from monitor.kernel.layout import MAX_NESTED
from monitor.rules import RuleSet

from .conftest import ROOT, connect_from, deliver_until
from .test_dns_names import run_agent
from .test_enforce_agent import stop

pytestmark = pytest.mark.kernel

EPERM, KILLED = 1, -9
RULES = [{"id": "deny-net", "match": {"dest_ip": "127.99.0.0/16"}, "action": "deny"}]
MAKE = """
import os, sys
top, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + count):
    os.mkdir(f"{top}/n{i}")
    print(i, flush=True)
"""


def make(container, first: int, count: int) -> tuple[int, list[str]]:
    proc = container.spawn([sys.executable, "-c", MAKE, container.dir, str(first), str(count)], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out.split()


def moved_in(container, nested: str) -> int:
    """A process of the container that moves itself into one of its cgroups, then connects
    to the denied network: its status (a killed one's -9), else the connect's errno."""
    connect = "from monitor.testbed import connect_once as c; print(c('127.99.0.1', 9))"
    script = f'echo $$ > {container.dir}/{nested}/cgroup.procs && {sys.executable} -c "{connect}"'
    proc = container.spawn(["sh", "-c", script], stdout=subprocess.PIPE, cwd=ROOT)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode if proc.returncode else int(out)


def test_a_container_that_floods_cgroups_loses_only_its_own(enforcement):
    flooder = enforcement.container("cg-flooder")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(RuleSet.from_specs(RULES, 1))
    try:
        status, printed = make(flooder, 0, MAX_NESTED + 10)  # the last made, its maker killed on the way back
        assert (status, len(printed)) == (KILLED, MAX_NESTED), "killed at the first cgroup past the bound"
        assert moved_in(flooder, f"n{MAX_NESTED}") == KILLED, "a cgroup past the bound is not a way out"
        assert moved_in(flooder, "n5") == EPERM, "its own cgroups within the bound are judged"
        later = enforcement.container("cg-after")
        assert connect_from(later, "127.99.0.1", 9) == EPERM, "a container made after it is judged at once"
        enforcer.rescan()
        ids = {s.cgroup_id for s in enforcer.scopes}
        assert len([s for s in enforcer.scopes if s.path.startswith(flooder.cgroup_path + "/")]) == MAX_NESTED
        assert len(ids) == len(enforcer.monitored & ids)
        # room given back: ten removed, ten more made
        for i in range(10):
            os.rmdir(os.path.join(flooder.dir, f"n{i}"))
        assert make(flooder, 5000, 10) == (0, [str(i).encode() for i in range(5000, 5010)])
    finally:  # every cgroup it made, however far the test got
        for name in os.listdir(flooder.dir):
            if name.startswith("n") and os.path.isdir(os.path.join(flooder.dir, name)):
                os.rmdir(os.path.join(flooder.dir, name))


@pytest.mark.django_db(transaction=True)
async def test_the_flood_is_raised_naming_the_container(enforcement, tmp_path):
    from dashboard.events.models import Violation
    from dashboard.fleet.models import Node
    from monitor.agent import Agent

    node = await sync_to_async(Node.objects.create)(name="cg-flood", token_hash="c" * 64)
    flooder = enforcement.container("cg-raised")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, RULES)
    runner = await run_agent(agent)
    try:
        status, printed = await asyncio.to_thread(make, flooder, 0, MAX_NESTED + 1)
        assert (status, len(printed)) == (KILLED, MAX_NESTED)

        def raised():
            return Violation.objects.filter(rule_id="cgroup-flood").exists()

        await deliver_until(agent, node, raised, timeout=10)
    finally:
        await stop(runner)
        for name in os.listdir(flooder.dir):
            if name.startswith("n") and os.path.isdir(os.path.join(flooder.dir, name)):
                os.rmdir(os.path.join(flooder.dir, name))
    v = await Violation.objects.select_related("container").aget(rule_id="cgroup-flood")
    assert (v.kind, v.action, v.enforced, v.container.name) == ("call", "deny", True, "cg-raised")
    assert v.target.startswith("mkdir of a cgroup past the container's 1,024")
