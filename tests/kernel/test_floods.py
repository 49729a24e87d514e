"""SYN floods on the real kernel, between two network namespaces of the test's own (a veth
pair, 198.18.0.0/24, XDP on the receiving end): a burst of SYNs from one source reaches a
flood rule's threshold and the program itself drops the source from that SYN on, within
the burst, for the rule's hold; with the agent the flood is one violation."""

import asyncio
import subprocess
import sys
import time

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.rules import RuleSet

from .conftest import deliver_until
from .test_blocklist import A, namespaces, replies  # noqa: F401 (a fixture)
from .test_enforce_agent import run_agent, stop

pytestmark = pytest.mark.kernel
BURST = r"""
import socket, sys
for i in range(int(sys.argv[1])):  # each a SYN to a closed port (answered with a RST): never a connection
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("198.18.0.2", 20000 + i % 50))
    s.close()
"""


def burst(ns: str, syns: int) -> None:
    subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", BURST, str(syns)], check=True,
                   timeout=30)  # fmt: skip


def flood_rule(action: str, **extra) -> dict:
    return {"id": f"flood-{action}", "match": {}, "limit": {"syn_per_source": 200}, "action": action, **extra}


def test_a_syn_burst_gets_its_source_dropped_at_xdp_within_the_second(enforcement, namespaces):  # noqa: F811
    a, b = namespaces
    enforcer = enforcement.enforcer
    enforcer.xdp_ifaces = (f"{b}/ce-b",)
    enforcer.start()
    enforcer.sync(RuleSet.from_specs([flood_rule("deny", hold=3)], 1))
    assert replies(a) == 3  # a few datagrams are no flood
    started = time.monotonic_ns()
    burst(a, 500)
    assert replies(a) == 0  # dropped: every packet of the source, not only its SYNs
    ((source, until, _slot, audit),) = enforcer.flooders()
    assert source == A and not audit
    blocked_at = until - 3 * 10**9
    assert 0 < blocked_at - started < 10**9, f"blocked {(blocked_at - started) / 1e9:.2f}s after the burst began"
    assert enforcer.counters()["flood-deny"] == 301 + 3  # the SYNs from the 200th on, then the datagrams
    time.sleep(max(0.0, (until - time.monotonic_ns()) / 1e9 + 0.2))
    assert replies(a) == 3  # the hold is over
    enforcer.sync(RuleSet.from_specs([], 2))  # no flood rule: no SYN counted
    burst(a, 500)
    assert replies(a) == 3


@pytest.mark.django_db(transaction=True)
async def test_the_agent_reports_a_flood_once(enforcement, namespaces, tmp_path):  # noqa: F811
    a, b = namespaces
    node = await sync_to_async(Node.objects.create)(name="flood-node", token_hash="f" * 64)
    enforcement.enforcer.xdp_ifaces = (f"{b}/ce-b",)
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [flood_rule("alert", severity="critical")])
    runner = await run_agent(agent)
    try:
        await asyncio.to_thread(burst, a, 1000)  # well past the threshold: still one report
        assert await asyncio.to_thread(replies, a) == 3  # an alert drops nothing

        def reported():
            return Violation.objects.filter(kind="flood").exists()

        await deliver_until(agent, node, reported)
        await asyncio.sleep(0.5)
        await deliver_until(agent, node, lambda: True)
    finally:
        await stop(runner)
    (v,) = [v async for v in Violation.objects.filter(node=node)]
    assert (v.kind, v.rule_id, v.action, v.severity, v.enforced, v.seq is not None) == (
        "flood", "flood-alert", "alert", "critical", False, True
    )  # fmt: skip
    assert v.target.startswith(f"{A} sent 200 TCP SYNs within 1 s (to port 200")
