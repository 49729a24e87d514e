"""Scans on the real kernel: a container connecting to thousands of closed loopback ports is
summed in the kernel (a few hundred flows, not one per call), a scan rule's deny refuses its
calls from the threshold on for the hold and then lets them through again, and with the
agent the scan is one scan violation plus summary rows whose counts add up to every call."""

import asyncio
import errno
import json
import os
import subprocess
import sys
import time

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.kernel.compile import SUMMARISE
from monitor.rules import RuleSet
from monitor.testbed import start_sink

from .conftest import ROOT, connect_from, deliver_until
from .test_enforce_agent import run_agent, stop

pytestmark = pytest.mark.kernel
TARGET = "127.77.0.1"  # nothing listens there: every connect is refused at once (ECONNREFUSED)
FIRST_PORT = 20000
NOBODY = 65534


def scan_from(container, count: int, first: int = FIRST_PORT, as_user: int | None = None) -> dict[int, int]:
    """A port scan from inside the container (by that user and group id): errno -> calls."""
    argv = [sys.executable, "-m", "monitor.testbed", "scan", TARGET, str(first), str(count)]
    if as_user is not None:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *argv]
    proc = container.spawn(argv, cwd=ROOT, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=120)
    return {int(k): v for k, v in json.loads(out).items()}


def scan_rule(action: str, threshold: int, **extra) -> dict:
    return {"id": f"scan-{action}", "match": {"container": "*scanner*"}, "limit": {"new_destinations": threshold},
            "action": action, **extra}  # fmt: skip


def test_a_scan_is_summed_and_a_deny_refuses_it_for_the_hold(enforcement):
    scanner, other = enforcement.container("scanner"), enforcement.container("bystander")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(RuleSet.from_specs([scan_rule("deny", 300, hold=3)], 1))
    started = time.monotonic()
    outcomes = scan_from(scanner, 2000)
    took = time.monotonic() - started
    assert took < 2.5, f"the scan took {took:.1f}s: the hold would end inside it"
    # one process, so exact: calls 1-299 refused by the closed ports, the 300th and on by the kernel
    assert outcomes == {errno.ECONNREFUSED: 299, errno.EPERM: 1701}
    assert connect_from(other, TARGET, FIRST_PORT) == errno.ECONNREFUSED  # another container is not held
    entry = enforcer.scans()[scanner.cgroup_id]
    # summed from the SUMMARISE+1st new destination on, except the crossing call (sent: the scan's report)
    assert entry["calls"] == 2000 - SUMMARISE - 1 and entry["denied"] == 1700
    assert (entry["dest_ip"], entry["port_lo"], entry["port_hi"]) == (TARGET, FIRST_PORT + SUMMARISE, FIRST_PORT + 1999)
    assert entry["comm"].startswith("python")
    flows = [key for _raw, key, _w, _n in enforcer.flows() if key[0] == scanner.cgroup_id]
    assert len(flows) == SUMMARISE + 1  # not one per call
    assert enforcer.counters()["scan-deny"] == 1701  # every refused call counted under its rule
    assert connect_from(scanner, TARGET, 1) == errno.EPERM  # still held
    time.sleep(max(0.0, started + 3.2 - time.monotonic()))
    assert connect_from(scanner, TARGET, 2) == errno.ECONNREFUSED  # the hold is over


SCANNER_WITH_A_FLOW = r"""
import socket, struct, sys
flow = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
flow.sendall(b"x" * 1000)  # before the scan: its own entry
linger = struct.pack("ii", 1, 0)
for port in range(int(sys.argv[3]), int(sys.argv[3]) + int(sys.argv[4])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect_ex((sys.argv[2], port))
    s.close()
flow.sendall(b"y" * 2000)  # while the container is scanning: still its own entry
print(flow.getsockname()[1], flush=True)
sys.stdin.readline()  # the test reads the table before the flow ends
"""


def test_a_scans_packets_are_counted_exactly_and_a_flow_from_before_keeps_its_entry(enforcement):
    """Every SYN and RST of a scan is counted (in the container's other traffic from the
    SUMMARISE+1st new destination on: no table fills, no entry looked for), and a connection
    the container had open before the scan keeps counting its data into its own entry."""
    scanner = enforcement.container("scanner")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(RuleSet([], 1))
    sink, port = start_sink()
    try:
        proc = scanner.spawn([sys.executable, "-c", SCANNER_WITH_A_FLOW, str(port), TARGET, str(FIRST_PORT), "1500"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        local_port = int(proc.stdout.readline())
        time.sleep(0.2)  # the flow's last ACK comes back
        rows = {key: counters for key, counters in enforcer.read_traffic() if key[0] == scanner.cgroup_id}
        proc.communicate("\n", timeout=30)
    finally:
        sink.kill()
        sink.wait()
    flow = rows.pop((scanner.cgroup_id, 4, 6, local_port, "127.0.0.1", port))
    assert flow[2:4] == (0, 3000)  # payload in, out: all of the flow's data, before the scan and during it
    (other_key,) = [key for key in rows if key[2] == 0]  # protocol 0: the container's other traffic
    other = rows.pop(other_key)
    scanned = {key[5] for key in rows}  # the scan's first destinations, a flow each
    assert all(key[4] == TARGET and key[2] == 6 for key in rows) and len(scanned) == len(rows) <= SUMMARISE + 1
    calls = 1500
    # every call: a SYN out and a RST in, counted once, in its flow's entry or in other
    assert sum(r[5] for r in rows.values()) + other[5] == calls and sum(r[4] for r in rows.values()) + other[4] == calls
    assert other[5] >= calls - SUMMARISE - 1 and other[2:4] == (0, 0)


REPEATS = r"""
import socket, struct, sys
linger = struct.pack("ii", 1, 0)
for n in range(int(sys.argv[3])):  # the same few destinations over and over, flat out
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect_ex((sys.argv[1], int(sys.argv[2]) + n % 100))
    s.close()
"""


def test_calls_to_destinations_it_reached_before_are_no_scan(enforcement):
    """3,000 calls to 100 destinations as fast as they go: 100 new destinations, not a scan
    (the container's filter of destinations that had a flow must send every repeat to its
    flow), and every call counted, in the flow of its own destination."""
    app = enforcement.container("repeater")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(RuleSet([], 1))
    proc = app.spawn([sys.executable, "-c", REPEATS, TARGET, str(FIRST_PORT), "3000"])
    assert proc.wait(timeout=60) == 0
    entry = enforcer.scans()[app.cgroup_id]
    assert (entry["calls"], entry["scanning"]) == (0, False), entry  # nothing summed: no scan
    folded = {key[2]: n for _raw, key, _w, n in enforcer.flows() if key[0] == app.cgroup_id}
    # a flow per destination, each with its 30 calls (nobody reads the events: every call is
    # counted with its flow)
    assert folded == {FIRST_PORT + k: 30 for k in range(100)}


def test_an_alert_rule_lets_the_scan_through_and_a_slow_one_is_no_scan(enforcement):
    scanner = enforcement.container("scanner-a")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(RuleSet.from_specs([scan_rule("alert", 100)], 1))
    assert scan_from(scanner, 1000) == {errno.ECONNREFUSED: 1000}
    entry = enforcer.scans()[scanner.cgroup_id]
    assert (entry["calls"], entry["denied"]) == (1000 - SUMMARISE, 0), entry
    slow = enforcement.container("scanner-slow")
    argv = [sys.executable, "-m", "monitor.testbed", "scan", TARGET, "30000", "30", "--pause", "0.05"]
    proc = slow.spawn(argv, cwd=ROOT, stdout=subprocess.PIPE)
    assert json.loads(proc.communicate(timeout=60)[0]) == {str(errno.ECONNREFUSED): 30}
    assert enforcer.scans()[slow.cgroup_id]["calls"] == 0  # 30 destinations in 1.5 s: each its own flow


@pytest.mark.django_db(transaction=True)
async def test_the_agent_reports_one_scan_violation_and_every_call(enforcement, tmp_path):
    node = await sync_to_async(Node.objects.create)(name="scan-node", token_hash="s" * 64)
    scanner = enforcement.container("scanner-b")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [scan_rule("alert", 150, severity="high")])
    runner = await run_agent(agent)
    try:
        outcomes = await asyncio.to_thread(scan_from, scanner, 3000, as_user=NOBODY)
        await asyncio.sleep(1.5)  # the next flow and scan readings
    finally:
        await stop(runner)
    assert outcomes == {errno.ECONNREFUSED: 3000}
    rows = ConnectionEvent.objects.filter(container__name="scanner-b")

    def stored():
        return sum(rows.values_list("count", flat=True)) >= 3000

    await deliver_until(agent, node, stored)
    assert sum([n async for n in rows.values_list("count", flat=True)]) == 3000  # every call, once
    summed = [r async for r in rows.filter(dest_port_hi__isnull=False)]
    assert 1 <= len(summed) <= 5  # one per container every few seconds, not one per call
    assert sum(r.count for r in summed) == 3000 - SUMMARISE  # the 150th call went out on its own, as the alert
    assert min(r.dest_port for r in summed) == FIRST_PORT + SUMMARISE
    assert max(r.dest_port_hi for r in summed) == FIRST_PORT + 2999
    assert await rows.acount() <= SUMMARISE + 1 + len(summed)
    assert {(r.uid, r.gid, r.comm) for r in summed} == {(NOBODY, NOBODY, os.path.basename(sys.executable)[:15])}
    violations = [v async for v in Violation.objects.filter(container__name="scanner-b")]
    assert len(violations) == 1
    (v,) = violations
    assert (v.kind, v.rule_id, v.action, v.severity, v.enforced) == ("scan", "scan-alert", "alert", "high", False)
    assert v.target.startswith("150 new destinations within 1 s")
    assert agent.health()["kernel_reports"] == {"scans_raised": 1, "calls_summed": 3000 - SUMMARISE}
