"""A rule saved in the admin is enforced by the node's kernel within a second, and lifted
as fast: admin form -> policy version -> agent consumer -> uplink -> agent -> bpftool."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from dashboard.asgi import application
from dashboard.fleet.models import Node
from dashboard.policy.models import Rule
from monitor.agent import Agent
from monitor.uplink import Uplink

from .conftest import connect_from

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]
EPERM = 1
FORM = {
    "rule_id": "block-5",
    "description": "",
    "action": "deny",
    "mode": "enforce",
    "severity": "high",
    "priority": 100,
    "tags": "[]",
    "container": "",
    "cgroup_path": "",
    "cgroup_id": "",
    "dest_ip": "127.10.10.5/32",
    "dest_port": "",
}


class CommunicatorSocket:
    """The websocket surface Uplink uses, over a channels test communicator (one process)."""

    def __init__(self, comm):
        self.comm = comm

    async def send(self, text):
        await self.comm.send_to(text_data=text)

    async def recv(self):
        return await self.comm.receive_from(timeout=30)

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.comm.receive_from(timeout=3600)


async def until(errno, app, port, limit=1.0):
    """Seconds until connect() from the container gives `errno`; fails past `limit`."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if await asyncio.to_thread(connect_from, app, "127.10.10.5", port) == errno:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"connect() did not give errno {errno} within {limit}s")


async def test_admin_edit_reaches_the_kernel_within_a_second(enforcement, targets, tmp_path, client, staff):
    node = Node(name="edge-admin-test")
    token = node.issue_token()
    await sync_to_async(node.save)()
    app = enforcement.container("edge-app-prod")
    comm = WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {token}".encode())])
    assert (await comm.connect())[0]
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    uplink = Uplink(agent, "ws://in-process", token)
    runner = asyncio.create_task(agent.run(uplink._session(CommunicatorSocket(comm))))
    try:
        await asyncio.wait_for(agent.kernel_ready.wait(), 30)
        assert await asyncio.to_thread(connect_from, app, "127.10.10.5", targets.port) == 0
        await sync_to_async(client.force_login)(staff)

        response = await sync_to_async(client.post)("/admin/policy/rule/add/", FORM)
        assert response.status_code == 302, response.content[:500]
        enforced_after = await until(EPERM, app, targets.port)

        pk = await sync_to_async(lambda: Rule.objects.get(rule_id="block-5").pk)()
        response = await sync_to_async(client.post)(f"/admin/policy/rule/{pk}/change/", {**FORM, "action": "allow"})
        assert response.status_code == 302, response.content[:500]
        lifted_after = await until(0, app, targets.port)

        health = agent.health()["kernel"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await comm.disconnect()
    print(f"enforced after {enforced_after:.3f}s, lifted after {lifted_after:.3f}s")
    assert enforced_after < 1.0 and lifted_after < 1.0
    assert health["policy_version"] == agent.ruleset.version
