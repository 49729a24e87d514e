"""The ingress blocklist on the real kernel, between two network namespaces of the test's
own (a veth pair, 198.18.0.0/24): a source an ingress rule blocks is dropped at XDP on the
receiving end (counted in its rule), unblocked live by the next policy, and a block with an
expiry ends by itself; the program comes off the interface with the rest."""

import datetime as dt
import subprocess
import sys
import time
import uuid

import pytest

from monitor.rules import RuleSet
from monitor.testbed import namespace_pair

pytestmark = pytest.mark.kernel
A, B = "198.18.0.1", "198.18.0.2"
ECHO = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.2", 9999))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""
ASK = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
got = 0
for i in range(3):
    s.sendto(b"ping", ("198.18.0.2", 9999))
    try:
        s.recv(64)
        got += 1
    except TimeoutError:
        pass
print(got)
"""


@pytest.fixture
def namespaces(kernel):
    """Two namespaces joined by a veth pair, a UDP echo server in the second; all removed after."""
    with namespace_pair(f"test-{uuid.uuid4().hex[:6]}") as (a, b):
        echo = subprocess.Popen(["nsenter", f"--net=/run/netns/{b}", sys.executable, "-c", ECHO],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert echo.stdout.readline().strip() == "ready"
            yield a, b
        finally:
            echo.kill()
            echo.wait()


def replies(ns: str) -> int:
    """Of three datagrams from the first namespace to the echo server, how many came back."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", ASK], capture_output=True,
                         text=True, timeout=10, check=True).stdout  # fmt: skip
    return int(out)


def test_a_blocked_source_is_dropped_at_xdp_and_unblocked_live(enforcement, namespaces):
    a, b = namespaces
    enforcer = enforcement.enforcer
    enforcer.xdp_ifaces = (f"{b}/ce-b",)
    enforcer.start()
    assert enforcer.xdp_state == {f"{b}/ce-b": "generic"}, enforcer.xdp_state  # cheaper than native on a veth
    assert replies(a) == 3
    block = {"id": "block-a", "match": {"source_ip": f"{A}/32"}, "action": "deny"}
    others = {"id": "block-other", "match": {"source_ip": "198.18.1.0/24"}, "action": "deny"}
    enforcer.sync(RuleSet.from_specs([block, others], 1))
    assert replies(a) == 0
    counts = enforcer.counters()
    assert counts["block-a"] == 3 and counts.get("block-other", 0) == 0
    audit = dict(block, mode="audit")  # counted, let through
    enforcer.sync(RuleSet.from_specs([audit], 2))
    assert replies(a) == 3 and enforcer.counters()["block-a"] == 6
    enforcer.sync(RuleSet.from_specs([others], 3))  # unblocked: a map write, nothing restarted
    assert replies(a) == 3


def test_a_block_with_an_expiry_ends_by_itself_and_an_allow_carves_a_hole(enforcement, namespaces):
    a, b = namespaces
    enforcer = enforcement.enforcer
    enforcer.xdp_ifaces = (f"{b}/ce-b",)
    enforcer.start()
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    rules = [{"id": "brief", "match": {"source_ip": "198.18.0.0/24"}, "action": "deny", "expires": soon}]
    enforcer.sync(RuleSet.from_specs(rules, 1))
    assert replies(a) == 0
    time.sleep(2.2)
    assert replies(a) == 3, "the kernel passes over an expired entry without any policy write"
    hole = [{"id": "allow-a", "priority": 1, "match": {"source_ip": f"{A}/32"}, "action": "allow"},
            {"id": "block-net", "match": {"source_ip": "198.18.0.0/24"}, "action": "deny"}]  # fmt: skip
    enforcer.sync(RuleSet.from_specs(hole, 2))
    assert replies(a) == 3 and enforcer.counters()["allow-a"] == 3
    enforcement.enforcer.uninstall()
    shown = subprocess.run(["ip", "-n", b, "-j", "link", "show", "dev", "ce-b"], capture_output=True, text=True)
    assert "xdp" not in shown.stdout, "the program stays on the interface after uninstall"
