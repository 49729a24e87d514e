"""The agent with the connect4/6 programs as its observer: a kernel deny is one violation
with the kernel's rule, audit-mode rules let traffic through and still report, repeated
calls arrive as counts, a container is observed from its first connect(), connect.bt
(when it runs too) leaves the containers to the programs, and the API serves the result."""

import asyncio
import os
import signal
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from dashboard.api.models import ApiToken
from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.testbed import connect_once

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


def programs_only(enforcement, tmp_path, **kw) -> Agent:
    """An agent whose only source is the programs, with the deny-5 policy."""
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer, **kw)
    agent.set_policy(1, POLICY[:1])
    return agent


def reader_of(agent: Agent):
    return next(s for s in agent.supervisors if s.backend.name == "kernel")


def reported(agent: Agent, **match) -> int:
    """Calls queued so far whose fields match (rows count their count)."""
    return sum(e.get("count", 1) for e in agent.outbox if all(e.get(k) == v for k, v in match.items()))


async def test_kernel_deny_is_one_enforced_violation_and_audit_lets_through(enforcement, targets, tmp_path, client):
    node = await sync_to_async(Node.objects.create)(name="enforce-node", token_hash="e" * 64)
    app = enforcement.container("edge-app-prod")
    agent = Agent(backends=("connect",), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(7, POLICY)
    runner = await run_agent(agent)
    try:
        proc = app.spawn(
            ["python3", "-m", "monitor.testbed", "connect", f"127.10.10.5:{targets.port}", f"127.8.8.8:{targets.port}"],
            cwd=ROOT,
        )
        await asyncio.to_thread(proc.wait, 10)
        host = await asyncio.to_thread(connect_once, "127.8.8.8", targets.port)  # this process: not in a container
        await deliver_until(
            agent,
            node,
            lambda: (
                ConnectionEvent.objects.filter(pid=proc.pid).count() >= 2
                and ConnectionEvent.objects.filter(pid=os.getpid(), dest_ip="127.8.8.8").exists()
            ),
        )
        await asyncio.sleep(1.5)  # both sources had time to say more: nothing more may arrive
        await deliver_until(agent, node, lambda: True)
        health = agent.health()["kernel"]
        counters = await asyncio.to_thread(enforcement.enforcer.counters)
    finally:
        await stop(runner)

    def check():
        rows = list(ConnectionEvent.objects.filter(pid=proc.pid).order_by("dest_ip"))
        assert [(r.dest_ip, r.result, r.verdict, r.rule_id) for r in rows] == [
            ("127.10.10.5", -1, "deny", "deny-5"),
            ("127.8.8.8", None, "deny", "audit-8"),  # seen by the programs, let through: outcome not traced
        ]
        [mine] = ConnectionEvent.objects.filter(pid=os.getpid(), dest_ip="127.8.8.8")  # traced by connect.bt
        assert (mine.container, mine.result, mine.verdict, mine.rule_id) == (None, host, "deny", "audit-8")
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
    assert health["policy_version"] == 7 and agent.covered >= 2  # connect.bt saw the container's calls too


REPEAT = """
import socket, sys
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.connect_ex(("127.8.8.8", int(sys.argv[1])))
    s.close()
"""


async def test_the_programs_alone_observe_every_call_from_a_containers_first(enforcement, targets, tmp_path):
    """No tracer: a deny, an allowed flow repeated 500 times (sent once per 100 ms, the rest
    counted), and a container made after the start, observed from its very first connect()."""
    app = enforcement.container("edge-app-staging")
    agent = programs_only(enforcement, tmp_path)
    runner = await run_agent(agent)
    try:
        assert await asyncio.to_thread(connect_from, app, "127.10.10.5", targets.port) == EPERM
        proc = app.spawn([sys.executable, "-c", REPEAT, str(targets.port), "500"], stdout=subprocess.PIPE)
        await asyncio.to_thread(proc.wait, 30)
        late = enforcement.container("edge-app-late")  # no rescan can have found it yet
        late_proc = late.spawn([sys.executable, "-c", REPEAT, str(targets.port), "1"])
        await asyncio.to_thread(late_proc.wait, 10)
        events = []
        for _ in range(40):  # the quiet flow's last counts come with the next flow-table read
            events += [e for e in agent.outbox if "dest_ip" in e]
            agent.outbox.clear()
            if sum(e.get("count", 1) for e in events if e["pid"] in (proc.pid, 0)) >= 500 and any(
                e["pid"] == late_proc.pid for e in events
            ):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        events += list(agent.outbox)
    finally:
        await stop(runner)
    events = [e for e in events if "dest_ip" in e]  # connections (the execs are reported too)
    [deny] = [e for e in events if e["dest_ip"] == "127.10.10.5"]
    assert deny["kind"] == "kernel" and deny["container"]["name"] == "edge-app-staging"
    assert (deny["verdict"], deny["rule_id"], deny["enforced"], deny["result"]) == ("deny", "deny-5", True, -1)
    repeated = [e for e in events if e["dest_ip"] == "127.8.8.8" and e["container"]["name"] == "edge-app-staging"]
    assert sum(e.get("count", 1) for e in repeated) == 500  # exactly: sent + counted
    assert len(repeated) < 50 and {e["verdict"] for e in repeated} == {"allow"}
    [first] = [e for e in events if e["pid"] == late_proc.pid]
    assert first["container"]["name"] == "edge-app-late" and first["result"] is None


async def test_a_crashing_event_reader_restarts_and_never_lifts_enforcement(enforcement, targets, tmp_path):
    app = enforcement.container("edge-app-prod")
    agent = programs_only(enforcement, tmp_path)
    runner = await run_agent(agent)
    try:
        reader = reader_of(agent)
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
        await asyncio.sleep(0.3)  # the new reader has opened its buffers
        assert await asyncio.to_thread(connect_from, app, "127.10.10.5", targets.port) == EPERM
        for _ in range(50):  # denies made while no reader was there were counted in the flow table
            if reported(agent, rule_id="deny-5") >= 4:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.2)  # one more flow-table read: nothing is reported twice
        assert reported(agent, rule_id="deny-5") == 4  # every refused call, none lost to the reader's restarts
    finally:
        await stop(runner)


UDP_BURST = """
import os, socket, sys
# one CPU (argv[3], default 0): its buffer's lost-sample record comes with its next sample
os.sched_setaffinity(0, {int(sys.argv[3]) if len(sys.argv) > 3 else 0})
refused = 0
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    refused += s.connect_ex(("127.10.10.5", int(sys.argv[1]))) == 1  # EPERM
    s.close()
print(refused)
"""


async def test_a_full_perf_buffer_loses_no_call(enforcement, targets, tmp_path):
    """The reader stalls (SIGSTOP) through a burst of 5,000 denied calls: the perf buffer
    fills, the programs count what they cannot send, and every call is reported once."""
    app = enforcement.container("edge-app-prod")
    agent = programs_only(enforcement, tmp_path)
    runner = await run_agent(agent)
    try:
        reader = reader_of(agent)
        os.kill(reader.health.pid, signal.SIGSTOP)  # the agent's own child
        try:
            proc = app.spawn([sys.executable, "-c", UDP_BURST, str(targets.port), "5000"], stdout=subprocess.PIPE)
            refused = int((await asyncio.to_thread(proc.communicate, timeout=60))[0])
        finally:
            os.kill(reader.health.pid, signal.SIGCONT)

        drained = -1
        while reader.health.events != drained:  # the reader catches up with the full buffer
            drained = reader.health.events
            await asyncio.sleep(0.5)
        # the kernel writes its lost-sample record before the CPU's next sample: make one
        proc = app.spawn([sys.executable, "-c", UDP_BURST, str(targets.port), "1"], stdout=subprocess.PIPE)
        refused += int((await asyncio.to_thread(proc.communicate, timeout=60))[0])
        for _ in range(50):
            if reported(agent, rule_id="deny-5") >= refused and reader.health.overflowed:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.2)  # one more flow-table read: nothing is reported twice
    finally:
        await stop(runner)
    assert refused == 5001 and reported(agent, rule_id="deny-5") == 5001
    assert reader.health.overflowed > 0  # the buffer did fill...
    assert reader.health.lost_events == 0 and agent.kernel_lost == 0  # ...and nothing was lost
    assert any(e.get("count", 1) > 1 for e in agent.outbox)


async def test_calls_made_while_no_agent_runs_are_reported_by_the_next_one(enforcement, targets, tmp_path):
    """The programs keep counting while the agent is down; the restarted agent reports
    exactly those calls (from the counts it saved as reported), none twice."""
    app = enforcement.container("edge-app-prod")
    state = str(tmp_path / "kernel-flows.json")

    async def session(denied: int, allowed: int, before=None):
        agent = programs_only(enforcement, tmp_path, kernel_state=state)
        runner = await run_agent(agent)
        try:
            if before is None:
                for script, n in ((UDP_BURST, denied), (REPEAT, allowed)):
                    argv = [str(targets.port), str(n)] + (["0"] if script is UDP_BURST else [])
                    await asyncio.to_thread(app.spawn([sys.executable, "-c", script, *argv]).wait, 60)

            for _ in range(50):
                if reported(agent, dest_ip="127.10.10.5") >= denied and reported(agent, dest_ip="127.8.8.8") >= allowed:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.2)  # one more flow-table read: nothing more may come
        finally:
            await stop(runner)
        return reported(agent, dest_ip="127.10.10.5"), reported(agent, dest_ip="127.8.8.8")

    assert await session(40, 300) == (40, 300)
    for script, argv in ((UDP_BURST, ["25", "1"]), (REPEAT, ["120"])):  # no agent runs now
        await asyncio.to_thread(app.spawn([sys.executable, "-c", script, str(targets.port), *argv]).wait, 60)
    assert await session(25, 120, before="made while down") == (25, 120)
