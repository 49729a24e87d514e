"""The trie compiler: the kernel's four longest-prefix lookups must give the rule engine's
first match, for any rule set. Checked against the engine on random policies and flows,
by simulating the program's lookups on the compiled entries."""

import ipaddress
import random

import pytest

from monitor.kernel.compile import MAX_PORTS_PER_RULE, Scope, compile_rules
from monitor.kernel.layout import (
    KernelRule,
    decode_key,
    encode_key,
)
from monitor.rules import Flow, RuleSet

SCOPES = [Scope(101, "/x.slice/docker-a.scope", "app-a"), Scope(102, "/x.slice/docker-b.scope", "app-b")]


def kernel_decision(compiled, scope: Scope, addr, port):
    """What enforce_connect.bpf.c computes: best rank over (cg|0) x (port|0) longest matches,
    the cgroup's own entries looked up only when `monitored` says it has some."""
    table = compiled.entries["rules4" if addr.version == 4 else "rules6"]
    best = None
    for cgid in ((scope.cgroup_id,) if scope.cgroup_id in compiled.own else ()) + (0,):
        for p in (port, 0):
            hits = []
            for key, value in table.items():
                net, kcg, kport = decode_key(key)
                if (kcg, kport) == (cgid, p) and addr in net:
                    hits.append((net.prefixlen, KernelRule.decode(value)))
            if hits:
                rule = max(hits, key=lambda h: h[0])[1]
                if best is None or rule.rank < best.rank:
                    best = rule
    return best


def random_rule(rng, i):
    match = {}
    if rng.random() < 0.7:
        length = rng.choice([8, 16, 24, 28, 32])
        addr = ipaddress.ip_address(f"127.{rng.randrange(3)}.{rng.randrange(3)}.{rng.randrange(4)}")
        match["dest_ip"] = str(ipaddress.ip_network(f"{addr}/{length}", strict=False))
    if rng.random() < 0.5:
        match["dest_port"] = rng.choice([80, 443, "80-82"])
    if rng.random() < 0.4:
        match["container"] = rng.choice(["app-a", "app-b", "app-*"])
    return {
        "id": f"r{i}",
        "priority": rng.randrange(5),
        "match": match,
        "action": rng.choice(["allow", "alert", "deny"]),
    }


@pytest.mark.parametrize("seed", range(40))
def test_kernel_lookups_agree_with_the_rule_engine(seed):
    rng = random.Random(seed)
    ruleset = RuleSet.from_specs([random_rule(rng, i) for i in range(rng.randrange(1, 12))], 1)
    compiled = compile_rules(ruleset, SCOPES)
    for _ in range(60):
        scope = rng.choice(SCOPES)
        addr = ipaddress.ip_address(f"127.{rng.randrange(3)}.{rng.randrange(3)}.{rng.randrange(4)}")
        port = rng.choice([80, 81, 443, 8080])
        expected = ruleset.evaluate(Flow.of(str(addr), port, cgroup_id=scope.cgroup_id, container=scope.container))
        got = kernel_decision(compiled, scope, addr, port)
        assert (got.rule_id if got else None) == (expected.id if expected else None), (addr, port, scope)


def test_own_names_every_cgroup_with_entries_keyed_by_its_id_and_no_other():
    """The programs skip a cgroup's own lookups without MON_OWN: a cgroup missing here would
    escape the rules naming it."""
    a, b = SCOPES
    only = [{"id": "every", "match": {"dest_ip": "127.0.0.1/32"}, "action": "deny"},
            {"id": "scan-all", "match": {}, "limit": {"new_destinations": 50}, "action": "alert"},
            {"id": "name-all", "match": {"dest_fqdn": "*.example.com"}, "action": "deny"}]  # fmt: skip
    assert compile_rules(RuleSet.from_specs(only, 1), SCOPES).own == set()
    for spec in (
        {"id": "ip", "match": {"container": "app-a", "dest_ip": "127.0.0.1/32"}, "action": "deny"},
        {"id": "name", "match": {"container": "app-a", "dest_fqdn": "*.example.com"}, "action": "deny"},
        {"id": "scan", "match": {"container": "app-a"}, "limit": {"new_destinations": 50}, "action": "alert"},
        {"id": "rate", "match": {"container": "app-a"}, "limit": {"connections_per_s": 50}, "action": "deny"},
    ):
        assert compile_rules(RuleSet.from_specs([*only, spec], 1), SCOPES).own == {a.cgroup_id}, spec["id"]
    everyone = {
        "id": "rate",
        "match": {},
        "limit": {"egress_bytes_per_s": 1 << 20},
        "action": "deny",
    }  # one entry per container
    assert compile_rules(RuleSet.from_specs([everyone], 1), SCOPES).own == {a.cgroup_id, b.cgroup_id}


def test_unaddressed_rules_cover_both_families_and_v6_networks_stay_v6():
    ruleset = RuleSet.from_specs(
        [
            {"id": "any", "match": {"dest_port": 22}, "action": "deny"},
            {"id": "v6", "match": {"dest_ip": "fd00::/8"}, "action": "deny"},
        ]
    )
    compiled = compile_rules(ruleset, [])
    keys = {name: {decode_key(k) for k in compiled.entries[name]} for name in ("rules4", "rules6")}
    assert keys["rules4"] == {(ipaddress.ip_network("0.0.0.0/0"), 0, 22)}
    assert keys["rules6"] == {(ipaddress.ip_network("::/0"), 0, 22), (ipaddress.ip_network("fd00::/8"), 0, 0)}


def test_slots_stay_with_their_rule_and_freed_slots_wait_a_round():
    first = compile_rules(
        RuleSet.from_specs([{"id": "a", "match": {}, "action": "deny"}, {"id": "b", "match": {}, "action": "alert"}]),
        [],
    )
    second = compile_rules(
        RuleSet.from_specs([{"id": "c", "match": {}, "action": "deny"}, {"id": "b", "match": {}, "action": "alert"}]),
        [],
        first.slots,
    )
    assert second.slots["b"] == first.slots["b"]
    assert second.slots["c"] not in first.slots.values()  # a's counter is deleted before reuse


def test_scoped_deny_with_no_container_and_too_wide_ranges_are_notes():
    ruleset = RuleSet.from_specs(
        [
            {"id": "ghost", "match": {"container": "gone"}, "action": "deny"},
            {"id": "wide", "match": {"dest_port": f"1-{MAX_PORTS_PER_RULE + 1}"}, "action": "deny"},
            {"id": "all-ports", "match": {"dest_port": "1-65535"}, "action": "deny"},
            {"id": "quiet", "match": {"container": "gone"}, "action": "alert"},
        ]
    )
    compiled = compile_rules(ruleset, SCOPES)
    assert sorted(n["rule_id"] for n in compiled.notes) == ["ghost", "wide"]
    assert (ipaddress.ip_network("0.0.0.0/0"), 0, 0) in {decode_key(k) for k in compiled.entries["rules4"]}


def test_key_encoding_puts_scope_before_the_prefix():
    key = encode_key(ipaddress.ip_network("127.10.10.0/24"), 7, 443)
    assert key.hex() == "68000000" + "0700000000000000" + "01bb" + "7f0a0a00"
    assert decode_key(key) == (ipaddress.ip_network("127.10.10.0/24"), 7, 443)
