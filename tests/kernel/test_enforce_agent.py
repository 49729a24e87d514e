"""The agent with kernel enforcement: a kernel deny becomes the violation of its traced
connection (once, with the kernel's rule), audit-mode rules let traffic through and
still report, and the API serves the result."""

import asyncio
import os
import signal

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from dashboard.api.models import ApiToken
from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent

from .conftest import ROOT, connect_from, deliver_until

EPERM = 1

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]

POLICY = [
    {"id": "deny-5", "severity": "critical", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"},
    {"id": "audit-8", "match": {"dest_ip": "127.8.8.8/32"}, "action": "deny", "mode": "audit"},
]


async def run_agent(agent):
    runner = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.kernel_ready.wait(), 30)
    await agent.wait_ready(30)
    return runner


async def stop(runner):
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_kernel_deny_is_one_enforced_violation_and_audit_lets_through(enforcement, targets, tmp_path, client):
    node = await sync_to_async(Node.objects.create)(name="enforce-node", token_hash="e" * 64)
    app = enforcement.container("edge-app-prod")
    agent = Agent(docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(7, POLICY)
    runner = await run_agent(agent)
    try:
        proc = app.spawn(
            ["python3", "-m", "monitor.testbed", "connect", f"127.10.10.5:{targets.port}", f"127.8.8.8:{targets.port}"],
            cwd=ROOT,
        )
        await asyncio.to_thread(proc.wait, 10)
        await deliver_until(agent, node, lambda: ConnectionEvent.objects.filter(pid=proc.pid).count() >= 2)
        await asyncio.sleep(1.5)  # past the pairing window: nothing more may arrive
        await deliver_until(agent, node, lambda: True)
        health = agent.health()["kernel"]
        counters = await asyncio.to_thread(enforcement.enforcer.counters)
    finally:
        await stop(runner)

    def check():
        rows = list(ConnectionEvent.objects.filter(pid=proc.pid).order_by("dest_ip"))
        assert [(r.dest_ip, r.result, r.verdict, r.rule_id) for r in rows] == [
            ("127.10.10.5", -1, "deny", "deny-5"),
            ("127.8.8.8", 0, "deny", "audit-8"),
        ]
        denied = Violation.objects.get(event=rows[0])
        assert (denied.enforced, denied.audit, denied.severity) == (True, False, "critical")
        assert denied.container.name == "edge-app-prod"
        audited = Violation.objects.get(event=rows[1])
        assert (audited.enforced, audited.audit) == (False, True)
        user = get_user_model().objects.create_superuser("api", "", "pw-api-12345")
        _, key = ApiToken.create_for(user, "test")
        body = client.get("/api/violations/?rule=deny-5", HTTP_AUTHORIZATION=f"Token {key}").json()
        assert [(r["rule_id"], r["enforced"], r["action"]) for r in body["results"]] == [("deny-5", True, "deny")]

    await sync_to_async(check)()
    assert counters["deny-5"] == 1 and counters["audit-8"] == 1
    assert health["policy_version"] == 7 and health["paired"] >= 2


async def test_a_kernel_deny_with_no_traced_connect_still_reports(enforcement, targets, tmp_path):
    """Without the tracing backend, the kernel's own event is the violation."""
    app = enforcement.container("edge-app-staging")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer, pair_window=0.3)
    agent.set_policy(1, POLICY[:1])
    runner = await run_agent(agent)
    try:
        proc = app.spawn(
            ["python3", "-m", "monitor.testbed", "connect", f"127.10.10.5:{targets.port}"],
            cwd=ROOT,
        )
        await asyncio.to_thread(proc.wait, 10)
        for _ in range(50):
            if agent.outbox:
                break
            await asyncio.sleep(0.1)
    finally:
        await stop(runner)
    [event] = list(agent.outbox)
    assert event["kind"] == "enforce" and event["pid"] == proc.pid
    assert (event["verdict"], event["rule_id"], event["enforced"], event["result"]) == ("deny", "deny-5", True, -1)
    assert event["container"]["name"] == "edge-app-staging" and event["dest_port"] == targets.port


async def test_a_crashing_event_reader_restarts_and_never_lifts_enforcement(enforcement, targets, tmp_path):
    app = enforcement.container("edge-app-prod")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer, pair_window=0.2)
    agent.set_policy(1, POLICY[:1])
    runner = await run_agent(agent)
    try:
        reader = next(s for s in agent.supervisors if s.backend.name == "enforce")
        reader.min_backoff = 0.05
        for _ in range(3):
            pid = reader.health.pid
            os.kill(pid, signal.SIGKILL)  # the agent's own child
            assert await asyncio.to_thread(connect_from, app, "127.10.10.5", targets.port) == EPERM
            for _ in range(100):
                if reader.health.pid not in (None, pid) and reader.health.state == "running":
                    break
                await asyncio.sleep(0.05)
        assert reader.health.restarts == 3 and "exited with status" in reader.health.last_error
        agent.outbox.clear()
        await asyncio.sleep(0.3)  # the new reader has opened its buffers
        assert await asyncio.to_thread(connect_from, app, "127.10.10.5", targets.port) == EPERM
        for _ in range(50):
            if agent.outbox:
                break
            await asyncio.sleep(0.1)
        assert [e["rule_id"] for e in agent.outbox] == ["deny-5"]  # still reported after the restarts
    finally:
        await stop(runner)
