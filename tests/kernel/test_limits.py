"""Rate limits on the real kernel: a bulk sender in a container held to 1 MB/s (within 10 %)
by its egress limit, with what was held back counted; a container's connect() calls held to
their rate (EPERM beyond its burst), another container untouched; and with the agent, one
limit violation saying how much was held back."""

import asyncio
import errno
import subprocess
import sys
import time

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.rules import RuleSet
from monitor.testbed import start_sink

from .conftest import ROOT, connect_from, deliver_until
from .test_enforce_agent import run_agent, stop

pytestmark = pytest.mark.kernel
RATE = 1_000_000
SENDER = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 << 10)
chunk, sent, start = b"x" * 65536, 0, time.perf_counter()
s.settimeout(0.05)
while time.perf_counter() - start < seconds:
    try:
        sent += s.send(chunk)
    except TimeoutError:
        pass
s.settimeout(30)
s.shutdown(socket.SHUT_WR)  # then wait for the sink to have it all
s.recv(1)
print(sent / (time.perf_counter() - start))
"""
CONNECTS = r"""
import collections, json, socket, sys, time
n, pause = int(sys.argv[1]), float(sys.argv[2])
out = collections.Counter()
for _ in range(n):
    out[socket.socket().connect_ex(("127.0.0.1", int(sys.argv[3])))] += 1
    time.sleep(pause)
print(json.dumps(out))
"""


@pytest.fixture
def sink():
    proc, port = start_sink()
    yield port
    proc.kill()
    proc.wait()


def send(container, port: int, seconds: float) -> float:
    proc = container.spawn([sys.executable, "-c", SENDER, str(port), str(seconds)], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=seconds + 60)
    assert proc.returncode == 0
    return float(out)


def connects(container, n: int, pause: float, port: int) -> dict[int, int]:
    import json

    proc = container.spawn([sys.executable, "-c", CONNECTS, str(n), str(pause), str(port)], cwd=ROOT,
                           stdout=subprocess.PIPE)  # fmt: skip
    return {int(k): v for k, v in json.loads(proc.communicate(timeout=60)[0]).items()}


def egress_rule(**extra) -> dict:
    return {"id": "egress-1mb", "match": {"container": "*bulk*"}, "limit": {"egress_bytes_per_s": RATE},
            "action": "deny", **extra}  # fmt: skip


def test_an_egress_limit_holds_a_bulk_sender_to_its_rate(enforcement, sink):
    bulk, free = enforcement.container("bulk"), enforcement.container("free")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(RuleSet.from_specs([egress_rule()], 1))
    rate = send(bulk, sink, 4.0)
    assert 0.9 * RATE <= rate <= 1.1 * RATE, f"{rate:,.0f} B/s"
    held = enforcer.limits()[bulk.cgroup_id]
    assert held["egress_rate"] == RATE and held["held_bytes"] > 0 and held["held_packets"] > 0
    assert send(free, sink, 1.0) > 20 * RATE  # another container is not held
    enforcer.sync(RuleSet.from_specs([egress_rule(mode="audit")], 2))  # counted, not held
    before = enforcer.limits()[bulk.cgroup_id]["held_bytes"]
    assert send(bulk, sink, 1.0) > 20 * RATE and enforcer.limits()[bulk.cgroup_id]["held_bytes"] > before


def test_a_connection_limit_refuses_calls_beyond_its_rate(enforcement, sink):
    app, other = enforcement.container("conns"), enforcement.container("others")
    enforcer = enforcement.enforcer
    enforcer.start()
    rule = {"id": "conn-50", "match": {"container": "*conns"}, "limit": {"connections_per_s": 50}, "action": "deny"}
    enforcer.sync(RuleSet.from_specs([rule], 1))
    burst = connects(app, 200, 0, sink)  # ~20 ms of calls: the 100 ms burst (5 calls) and a call or two more
    assert burst[0] <= 10 and burst[errno.EPERM] == 200 - burst[0], burst
    assert enforcer.limits()[app.cgroup_id]["refused"] == burst[errno.EPERM]
    assert connects(other, 50, 0, sink) == {0: 50}
    time.sleep(0.2)
    assert connects(app, 20, 0.03, sink) == {0: 20}  # 33 a second: within the rate
    assert connect_from(app, "127.0.0.1", sink) == 0


@pytest.mark.django_db(transaction=True)
async def test_the_agent_reports_what_a_limit_held_back(enforcement, sink, tmp_path):
    node = await sync_to_async(Node.objects.create)(name="limit-node", token_hash="l" * 64)
    bulk = enforcement.container("bulk-agent")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [egress_rule(severity="low")])
    runner = await run_agent(agent)
    try:
        await asyncio.to_thread(send, bulk, sink, 2.0)
        await asyncio.sleep(1.5)  # the next reading of the limits
        await deliver_until(agent, node, lambda: Violation.objects.filter(kind="limit").exists())
    finally:
        await stop(runner)
    (v,) = [v async for v in Violation.objects.filter(node=node, kind="limit")]
    assert (v.rule_id, v.action, v.severity, v.enforced) == ("egress-1mb", "deny", "low", True)
    assert v.target.startswith("egress held to 1,000,000 B/s: ") and "held back" in v.target
    assert not await ConnectionEvent.objects.filter(rule_id="egress-1mb").aexists()
