"""Names, on the real kernel: a DNS answer a container receives is parsed by crossedge_in
before the container reads it, so a deny by name refuses the connect() that follows the
answer (the agent need not even run), other names go through, the entry ends with the
TTL, a `none` rule catches an address the container never resolved, and the agent shows
each connection's name."""

import asyncio
import subprocess
import sys
import time

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.kernel import batch
from monitor.kernel.layout import ADDR_KEY, RESOLVED
from monitor.rules import RuleSet
from monitor.testbed import DnsServer

from .conftest import DNS_SERVER as SERVER
from .conftest import ROOT, deliver_until

pytestmark = pytest.mark.kernel
EPERM, REFUSED = 1, 111


def resolve_in(container, port: int, *names: str, tcp: bool = False) -> list[tuple[str, int]]:
    """Resolve each name from inside the container and connect to the answer at once."""
    argv = [sys.executable, "-m", "monitor.testbed", "resolve", SERVER, str(port), *names] + (["--tcp"] if tcp else [])
    proc = container.spawn(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    return [(a, int(e)) for a, e in (line.split() for line in out.decode().splitlines())]


def connect_in(container, host: str, port: int) -> int:
    code = f"from monitor.testbed import connect_once as c; print(c({host!r}, {port}))"
    proc = container.spawn([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=10)
    return int(out)


NAME_RULES = [
    {"id": "allow-api", "match": {"dest_fqdn": "api.corp.test"}, "action": "allow"},
    {"id": "deny-blocked", "match": {"dest_fqdn": "blocked.test"}, "action": "deny"},
    {"id": "deny-evil", "match": {"dest_fqdn": "*.evil.test"}, "action": "deny"},
    {"id": "deny-short", "match": {"dest_fqdn": "short.test"}, "action": "deny"},
]


def test_deny_by_name_holds_from_the_answer_without_the_agent(enforcement, resolver):
    """Only the kernel: no agent reads the answers, the deny still holds for the connect()
    the same process makes microseconds after reading the answer."""
    app = enforcement.container("dns-app")
    other = enforcement.container("dns-other")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet.from_specs(NAME_RULES, 1))
    port = resolver.port
    # before its first answer a container's calls skip the table of names (its scans entry says
    # so); the answer that names an address marks the entry first
    assert connect_in(app, "127.20.0.2", port) == 0
    assert enforcement.enforcer.scans()[app.cgroup_id]["named"] is False
    got = dict(zip(["api", "blocked", "ok", "evil"], resolve_in(app, port, "api.corp.test", "blocked.test", "ok.test",
                                                                 "deep.evil.test"), strict=True))  # fmt: skip
    assert got["api"] == ("127.20.0.1", 0)
    assert got["blocked"] == ("127.20.0.2", EPERM)
    assert got["ok"] == ("127.20.0.3", 0)
    assert got["evil"] == ("127.20.0.4", EPERM), "*.evil.test covers deep.evil.test"
    # the same address from a container that never resolved the name: no name, no deny
    assert connect_in(other, "127.20.0.2", port) == 0
    scans = enforcement.enforcer.scans()
    assert scans[app.cgroup_id]["named"] is True and scans[other.cgroup_id]["named"] is False
    # over TCP too
    assert resolve_in(app, port, "blocked.test", tcp=True) == [("127.20.0.2", EPERM)]
    stats = enforcement.enforcer.dns_stats()
    assert stats["answers"] == 5 and stats["malformed"] == 0
    assert stats["lost"] == 5, "with nobody reading the dns pipe every answer is counted as not sent"


def test_ttl_ends_the_name(enforcement, resolver):
    app = enforcement.container("dns-ttl")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet.from_specs(NAME_RULES, 1))
    port = resolver.port
    assert resolve_in(app, port, "short.test") == [("127.20.0.5", EPERM)]  # TTL 1 s
    assert connect_in(app, "127.20.0.5", port) == EPERM  # still within the TTL
    time.sleep(1.5)
    assert connect_in(app, "127.20.0.5", port) == 0, "past its TTL the address no longer carries the name"
    assert resolve_in(app, port, "short.test") == [("127.20.0.5", EPERM)]  # asked again: named again


def test_a_ttl_is_taken_for_an_hour_at_most(enforcement, resolver):
    """An answer saying 2^31 - 1 s (68 years) names its address for an hour, not for good."""
    app = enforcement.container("dns-forever")
    enforcement.enforcer.start()
    rule = {"id": "deny-forever", "match": {"dest_fqdn": "forever.test"}, "action": "deny"}
    enforcement.enforcer.sync(RuleSet.from_specs([rule], 1))
    assert resolve_in(app, resolver.port, "forever.test") == [("127.20.0.8", EPERM)]
    now = time.monotonic_ns()  # (the kernel's expiry is CLOCK_MONOTONIC too)
    [left] = [
        RESOLVED.unpack(value)[0] - now
        for key, value in batch.dump(enforcement.enforcer.layout.map("resolved"))
        if ADDR_KEY.unpack(key)[0] == app.cgroup_id
    ]
    assert 3590e9 < left <= 3600e9, left / 1e9


@pytest.mark.parametrize("scope", [{"container": "dns-none"}, {}], ids=["its-own", "every-container"])
def test_none_catches_addresses_never_resolved(enforcement, resolver, scope):
    """A container's own rule (fqdn_rules) and every container's (the fqdn_unnamed array)."""
    app = enforcement.container("dns-none")
    rules = [{"id": "deny-unresolved", "match": {**scope, "dest_fqdn": "none"}, "action": "deny"}]
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet.from_specs(rules, 1))
    port = resolver.port
    assert connect_in(app, "127.20.0.7", port) == EPERM, "a hard-coded address"
    # asking the DNS server (port 53) is allowed, and a resolved address is too
    assert resolve_in(app, port, "ok.test") == [("127.20.0.3", 0)]
    assert enforcement.enforcer.counters()["deny-unresolved"] == 1
    enforcement.enforcer.sync(RuleSet.from_specs([], 2))
    assert connect_in(app, "127.20.0.7", port) == 0, "the rule gone, so is its entry"


async def run_agent(agent):
    runner = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.kernel_ready.wait(), 30)
    await agent.wait_ready(30)
    return runner


@pytest.mark.django_db(transaction=True)
async def test_agent_shows_names_and_applies_a_new_rule_to_names_learned_before(enforcement, resolver, tmp_path):
    node = await sync_to_async(Node.objects.create)(name="dns-node", token_hash="d" * 64)
    app = enforcement.container("dns-agent")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    rules = [
        {"id": "alert-corp", "match": {"dest_fqdn": "*.corp.test"}, "action": "alert"},
        {"id": "deny-blocked", "match": {"dest_fqdn": "blocked.test"}, "action": "deny", "severity": "high"},
        {"id": "alert-unresolved", "match": {"dest_fqdn": "none"}, "action": "alert"},
    ]
    agent.set_policy(1, rules)
    runner = await run_agent(agent)
    port = resolver.port
    try:
        got = await asyncio.to_thread(resolve_in, app, port, "api.corp.test", "blocked.test", "late.test")
        assert [e for _a, e in got] == [0, EPERM, 0]
        assert await asyncio.to_thread(connect_in, app, "127.20.0.8", port) == 0  # never resolved: alert only

        def stored():
            return ConnectionEvent.objects.filter(dest_ip__startswith="127.20.0.").count() >= 4

        await deliver_until(agent, node, stored, timeout=10)
        rows = {
            e.dest_ip: e
            async for e in ConnectionEvent.objects.filter(dest_ip__startswith="127.20.0.").select_related("container")
        }
        assert rows["127.20.0.1"].dest_name == "api.corp.test" and rows["127.20.0.1"].verdict == "alert"
        assert rows["127.20.0.2"].dest_name == "blocked.test" and rows["127.20.0.2"].verdict == "deny"
        assert rows["127.20.0.6"].dest_name == "late.test" and rows["127.20.0.6"].verdict == "allow"
        assert rows["127.20.0.8"].dest_name == "" and rows["127.20.0.8"].rule_id == "alert-unresolved"
        assert all(r.container and r.container.name == "dns-agent" for r in rows.values())
        denied = await Violation.objects.aget(rule_id="deny-blocked")
        assert denied.enforced and denied.dest_name == "blocked.test" and "blocked.test" in denied.target

        # a rule written after the container learned late.test applies to it at once
        agent.set_policy(2, [{"id": "deny-late", "match": {"dest_fqdn": "late.test"}, "action": "deny"}] + rules)
        deadline = time.monotonic() + 10
        while enforcement.enforcer.policy_version != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # the rewrite follows the write in the same round
        assert await asyncio.to_thread(connect_in, app, "127.20.0.6", port) == EPERM
        health = agent.health()["dns"]
        assert health["answers"] >= 3 and health["kernel_lost"] == 0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def test_ipv6_answers_over_ipv6(enforcement, v6_listener):
    """An AAAA answer from a DNS server on ::1: the IPv6 path of the program, both ways."""
    app = enforcement.container("dns-v6")
    enforcement.enforcer.resolvers |= {"::1"}  # this test's server, trusted as the node would be told
    enforcement.enforcer.start()
    rules = [{"id": "deny-v6", "match": {"dest_fqdn": "v6.test"}, "action": "deny"}]
    enforcement.enforcer.sync(RuleSet.from_specs(rules, 1))
    with DnsServer("::1") as server:  # port 53: the program reads what comes from there
        server.set("v6.test", "::1")
        server.set("other.test", "::1")
        code = (
            "from monitor.testbed import resolve_and_connect as r; import sys; "
            f"print(*r('::1', sys.argv[1], {v6_listener}, v6=True, dns_port={server.port}))"
        )
        # the allowed name first: ::1 (also the DNS server's address) is then named v6.test for
        # this container, and every call there, its DNS queries too, is refused, as the rule says
        for name, expected in (("other.test", 0), ("v6.test", EPERM)):
            proc = app.spawn([sys.executable, "-c", code, name], cwd=ROOT, stdout=subprocess.PIPE)
            out, _ = proc.communicate(timeout=30)
            assert out.split() == [b"::1", str(expected).encode()], name
