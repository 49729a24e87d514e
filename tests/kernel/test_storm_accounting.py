"""A real connect() storm through the real kernel sources and agent: repeated calls are
counted in the kernel (by the connect4/6 programs, or by connect.bt without them), each
flow sending one call per 100 ms; with 40 flows connect.bt's printed calls are still past
the agent's threshold (200 events/s here), so the agent folds them in user space too
(checked); the violation among them stays a single event; and the counts add up exactly to
what the load generated."""

import asyncio
import dataclasses
import json
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum

from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.backends import BACKENDS

from .conftest import ROOT, deliver_until

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]
LOAD = r"""
import socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
linger = struct.pack("ii", 1, 0)
for i in range(n):  # 40 flows: the listener's port and 39 closed ones next to it
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect_ex(("127.8.8.8", port + i % 40) if i != n // 2 else ("127.10.10.5", port))
    s.close()
    time.sleep(0.0005)
print(n)
"""


@pytest.mark.parametrize("source", ["programs", "connect.bt"])
async def test_a_storm_is_folded_and_still_adds_up(enforcement, targets, tmp_path, source):
    node = await sync_to_async(Node.objects.create)(name="storm-node", token_hash="s" * 64)
    app = enforcement.container("edge-app-prod")
    if source == "programs":
        agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer, aggregate_above=200)
    else:
        agent = Agent(backends=("connect",), docker_roots=(str(tmp_path),), aggregate_above=200)
    agent.set_policy(1, [{"id": "watch-5", "match": {"dest_ip": "127.10.10.5/32"}, "action": "alert"}])
    runner = asyncio.create_task(agent.run())
    try:
        await agent.wait_ready(30)
        proc = app.spawn([sys.executable, "-c", LOAD, str(targets.port), "6000"], cwd=ROOT, stdout=subprocess.PIPE)
        generated = int((await asyncio.to_thread(proc.communicate, timeout=60))[0])

        def stored():
            total = ConnectionEvent.objects.filter(container__name="edge-app-prod").aggregate(n=Sum("count"))["n"]
            return (total or 0) >= generated

        await deliver_until(agent, node, stored, timeout=20)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    def check():
        rows = ConnectionEvent.objects.filter(container__name="edge-app-prod")
        assert rows.aggregate(n=Sum("count"))["n"] == generated == 6000
        assert rows.filter(count__gt=1).exists() and rows.count() < generated  # folded
        [violation] = Violation.objects.filter(rule_id="watch-5")
        assert violation.event.count == 1 and violation.dest_ip == "127.10.10.5"

    await sync_to_async(check)()
    if source == "connect.bt":  # its printed calls carry no count: past the threshold the agent folds them
        assert agent.folder.folded > 0
    # (a call the programs send carries its flow's kernel count, and a counted event is never
    # folded again: with the programs the kernel does all the folding)


async def test_repeated_audit_denies_are_counted_once(enforcement, targets, tmp_path):
    """With connect.bt running too, a container's calls reach the agent twice (the tracer and
    the programs): they must be stored once, as the programs' events (audit mode: each one
    sent), not again from the tracer."""
    node = await sync_to_async(Node.objects.create)(name="audit-node", token_hash="a" * 64)
    app = enforcement.container("edge-app-prod")
    agent = Agent(backends=("connect",), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [{"id": "trial", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny", "mode": "audit"}])
    runner = asyncio.create_task(agent.run())
    flows = '("127.8.8.8", port + i % 40) if i != n // 2 else ("127.10.10.5", port)'
    assert flows in LOAD
    load = LOAD.replace(flows, '("127.10.10.5", port)')  # one flow: every call is an audited deny
    try:
        await asyncio.wait_for(agent.kernel_ready.wait(), 30)
        await agent.wait_ready(30)
        proc = app.spawn([sys.executable, "-c", load, str(targets.port), "300"], cwd=ROOT, stdout=subprocess.PIPE)
        generated = int((await asyncio.to_thread(proc.communicate, timeout=60))[0])

        def stored():
            rows = ConnectionEvent.objects.filter(container__name="edge-app-prod", dest_ip="127.10.10.5")
            return (rows.aggregate(n=Sum("count"))["n"] or 0) >= generated

        await deliver_until(agent, node, stored, timeout=20)
        await asyncio.sleep(1.5)  # anything late (a double count) would arrive now
        await deliver_until(agent, node, lambda: True)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    def check():
        rows = ConnectionEvent.objects.filter(container__name="edge-app-prod", dest_ip="127.10.10.5")
        assert rows.aggregate(n=Sum("count"))["n"] == generated == 300
        assert Violation.objects.filter(rule_id="trial", audit=True).count() == 300
        assert agent.covered >= 300  # the tracer saw them too and left them to the programs

    await sync_to_async(check)()


SCAN = r"""
import socket, struct, sys
port, flows, repeats = (int(a) for a in sys.argv[1:4])
linger = struct.pack("ii", 1, 0)
for i in range(flows):  # closed ports next to the listener: every call a distinct flow...
    for _ in range(repeats):  # ...repeated at once, so a remembered flow is folded
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.connect_ex(("127.8.8.8", port + 1 + i))
        s.close()
print(flows * repeats)
"""


def tracer_map(name: str) -> dict:
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, check=True).stdout)
    return max((m for m in maps if m.get("name") == name), key=lambda m: m["id"])


async def test_the_tracers_flow_memory_is_bounded_and_exact_past_the_bound(enforcement, targets, tmp_path, monkeypatch):
    """connect.bt remembers at most BPFTRACE_MAP_KEYS_MAX flows (set by the agent): with more
    distinct flows than that, @printed stays at its bound, the flows past it are printed call
    by call, and every call is still stored exactly once."""
    bound = 64
    monkeypatch.setitem(
        BACKENDS, "connect", dataclasses.replace(BACKENDS["connect"], env=(("BPFTRACE_MAP_KEYS_MAX", str(bound)),))
    )
    node = await sync_to_async(Node.objects.create)(name="scan-node", token_hash="b" * 64)
    app = enforcement.container("edge-app-prod")
    agent = Agent(backends=("connect",), docker_roots=(str(tmp_path),))
    agent.set_policy(1, [])
    runner = asyncio.create_task(agent.run())
    try:
        await agent.wait_ready(30)
        printed = await asyncio.to_thread(tracer_map, "AT_printed")
        assert printed["max_entries"] == bound
        flows = 5 * bound
        argv = [sys.executable, "-c", SCAN, str(targets.port), str(flows), "4"]
        proc = app.spawn(argv, cwd=ROOT, stdout=subprocess.PIPE)
        generated = int((await asyncio.to_thread(proc.communicate, timeout=60))[0])
        entries = await asyncio.to_thread(
            subprocess.run, ["bpftool", "-j", "map", "dump", "id", str(printed["id"])], capture_output=True, check=True
        )
        assert len(json.loads(entries.stdout)) == bound  # full, and no bigger

        def stored():
            total = ConnectionEvent.objects.filter(container__name="edge-app-prod").aggregate(n=Sum("count"))["n"]
            return (total or 0) >= generated

        await deliver_until(agent, node, stored, timeout=20)
        await asyncio.sleep(0.6)  # a late fold (a double count) would arrive now
        await deliver_until(agent, node, lambda: True)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    def check():
        rows = ConnectionEvent.objects.filter(container__name="edge-app-prod")
        assert rows.aggregate(n=Sum("count"))["n"] == generated == flows * 4
        assert rows.values("dest_port").distinct().count() == flows

    await sync_to_async(check)()
