"""Real bpftrace, real cgroups: connections are traced, attributed to their container,
judged by the rules and stored with their violations."""

import asyncio
import os
import sys

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.testbed import SimulatedContainer

from .conftest import deliver_until

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]

POLICY = [
    {"id": "rule-001", "match": {"dest_ip": "127.10.10.5/32"}, "action": "alert"},
    {"id": "rule-002", "match": {"container": "edge-app-staging", "dest_port": 3306}, "action": "deny"},
]
COMM = os.path.basename(sys.executable)[:15]  # the task name the kernel gives our client


def client(container, *targets):
    return container.spawn([sys.executable, "-m", "monitor.testbed", "connect", *targets])


async def test_connects_from_a_docker_scope_are_traced_attributed_and_judged(
    kernel, cgroup_parent, tmp_path, v6_listener
):
    node = await sync_to_async(Node.objects.create)(name="kernel-test", token_hash="x" * 64)
    agent = Agent(docker_roots=(str(tmp_path),))
    assert agent.set_policy(1, POLICY) == ""
    runner = asyncio.create_task(agent.run())
    prod = SimulatedContainer("edge-app-prod", cgroup_parent, str(tmp_path))
    staging = SimulatedContainer("edge-app-staging", cgroup_parent, str(tmp_path))
    try:
        await agent.wait_ready(30)
        with prod, staging:
            p = client(prod, "127.10.10.5:443", f"[::1]:{v6_listener}")
            s = client(staging, "127.0.0.2:3306")
            await asyncio.to_thread(p.wait, 10)
            await asyncio.to_thread(s.wait, 10)

            def seen():
                return (
                    ConnectionEvent.objects.filter(pid=p.pid).count() >= 2
                    and ConnectionEvent.objects.filter(pid=s.pid).exists()
                )

            await deliver_until(agent, node, seen)
            prod_cgroup_path, prod_cgroup_id = prod.cgroup_path, prod.cgroup_id
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    def check():
        v4 = ConnectionEvent.objects.select_related("container").get(pid=p.pid, dest_ip="127.10.10.5")
        assert (v4.dest_port, v4.comm, v4.family, v4.result) == (443, COMM, 4, -111)  # nothing listens there
        assert v4.container.name == "edge-app-prod" and v4.container.runtime == "docker"
        assert v4.container.container_id == prod.id
        assert (v4.cgroup_path, v4.cgroup_id) == (prod_cgroup_path, prod_cgroup_id)
        assert (v4.verdict, v4.rule_id) == ("alert", "rule-001")
        assert Violation.objects.get(event=v4).rule_id == "rule-001"

        v6 = ConnectionEvent.objects.get(pid=p.pid, family=6)
        assert (v6.dest_ip, v6.dest_port, v6.result, v6.verdict) == ("::1", v6_listener, 0, "allow")
        assert v6.container.name == "edge-app-prod"

        other = ConnectionEvent.objects.select_related("container").get(pid=s.pid)
        assert other.container.name == "edge-app-staging" and other.cgroup_id != prod_cgroup_id
        assert (other.verdict, other.rule_id) == ("deny", "rule-002")

    await sync_to_async(check)()


async def test_a_process_outside_containers_is_attributed_to_the_host(kernel, tmp_path):
    node = await sync_to_async(Node.objects.create)(name="kernel-test-host", token_hash="y" * 64)
    agent = Agent(docker_roots=(str(tmp_path),))
    runner = asyncio.create_task(agent.run())
    try:
        await agent.wait_ready(30)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "monitor.testbed", "connect", "127.8.8.8:80")
        await proc.wait()
        await deliver_until(agent, node, lambda: ConnectionEvent.objects.filter(pid=proc.pid).exists())
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    event = await sync_to_async(ConnectionEvent.objects.get)(pid=proc.pid)
    assert event.container_id is None and event.dest_ip == "127.8.8.8" and event.verdict == "allow"
