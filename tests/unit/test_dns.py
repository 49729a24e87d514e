"""Names: rule patterns, the kernel's name tables against the rule engine, DNS answers as
the agent reads them, and calls waiting for the answer that named them."""

import ipaddress
import random
import time
from types import SimpleNamespace

import dns.message
import pytest

from monitor.agent import Agent
from monitor.dns import Names, Pattern, name_hash, question_name
from monitor.kernel.compile import FQDN_MAP, UNNAMED_MAP, Scope, compile_rules
from monitor.kernel.layout import SLOT, decode_fqdn_rules, encode_fqdn_key
from monitor.rules import Flow, RuleError, RuleSet, parse_rule
from monitor.testbed import DnsServer

from .test_kernel_compile import kernel_decision

SCOPES = [Scope(101, "/x.slice/docker-a.scope", "app-a"), Scope(102, "/x.slice/docker-b.scope", "app-b")]
NAMES = ["a.x.test", "b.x.test", "x.test", "c.a.x.test", "y.test", ""]  # "": never resolved
PATTERNS = ["a.x.test", "x.test", "*.x.test", "*.a.x.test", "*.test", "y.test", "none"]


def fqdn_decision(compiled, scope: Scope, name: str, port: int):
    """What dns.bpf.h and fqdn_rule() compute: the answer picks the name's most specific
    pattern (the container's entries first), the connect walks that pattern's rules."""
    table = compiled.entries[FQDN_MAP]

    def lookup(cgid, hashed, kind):
        value = table.get(encode_fqdn_key(cgid, hashed, kind))
        return None if value is None else decode_fqdn_rules(value)

    if name == "":
        if port == 53:
            return None
        rules = lookup(scope.cgroup_id, 0, "none")
        assert lookup(0, 0, "none") is None  # every container's: the one entry of fqdn_unnamed
        unnamed = decode_fqdn_rules(compiled.entries[UNNAMED_MAP][SLOT.pack(0)])
        rules = unnamed if rules is None else rules
    else:
        parts = [p.encode() for p in name.split(".")]
        best_cg = best_all = None
        for i in range(len(parts) - 1, -1, -1):  # shortest suffix first, as the backwards pass
            key = (name_hash(parts[i:]), "exact" if i == 0 else "wild")
            if lookup(scope.cgroup_id, *key) is not None:
                best_cg = (scope.cgroup_id, *key)
            if lookup(0, *key) is not None:
                best_all = (0, *key)
        pattern = best_cg or best_all
        rules = lookup(*pattern) if pattern else None
    for rank, slot, rport, _action, _audit in rules or ():
        if rport in (0, port):
            return rank, slot
    return None


def random_rule(rng, i):
    match = {}
    if rng.random() < 0.6:
        match["dest_fqdn"] = rng.choice(PATTERNS)
    elif rng.random() < 0.5:
        match["dest_ip"] = rng.choice(["127.0.0.0/8", "127.0.0.1/32", "127.0.0.2/31"])
    if rng.random() < 0.4:
        match["dest_port"] = rng.choice([80, 443, 53])
    if rng.random() < 0.4:
        match["container"] = rng.choice(["app-a", "app-b", "app-*"])
    action = rng.choice(["allow", "alert", "deny"])
    return {"id": f"r{i}", "priority": rng.randrange(4), "match": match, "action": action}


@pytest.mark.parametrize("seed", range(60))
def test_the_kernels_name_tables_agree_with_the_rule_engine(seed):
    rng = random.Random(seed)
    ruleset = RuleSet.from_specs([random_rule(rng, i) for i in range(rng.randrange(1, 9))], 1)
    compiled = compile_rules(ruleset, SCOPES)
    by_slot = {slot: rule_id for rule_id, slot in compiled.slots.items()}
    for _ in range(80):
        scope, name = rng.choice(SCOPES), rng.choice(NAMES)
        addr, port = ipaddress.ip_address(f"127.0.0.{rng.randrange(4)}"), rng.choice([53, 80, 443])
        flow = Flow.of(str(addr), port, cgroup_id=scope.cgroup_id, container=scope.container, dest_name=name)
        expected = ruleset.evaluate(flow)
        by_address = kernel_decision(compiled, scope, addr, port)
        by_name = fqdn_decision(compiled, scope, name, port)
        candidates = [(by_address.rank, by_address.rule_id)] if by_address else []
        candidates += [(by_name[0], by_slot[by_name[1]])] if by_name else []
        got = min(candidates)[1] if candidates else None
        assert got == (expected.id if expected else None), (name, addr, port, scope, ruleset.rules)


def test_patterns_say_what_they_match():
    wild, exact, none = Pattern.parse("*.Example.COM."), Pattern.parse("api.example.com"), Pattern.parse("none")
    assert str(wild) == "*.example.com" and str(exact) == "api.example.com" and str(none) == "none"
    assert wild.matches("a.b.example.com") and wild.matches("api.example.com") and not wild.matches("example.com")
    assert not wild.matches("badexample.com") and not wild.matches("") and not wild.matches(None)
    assert exact.matches("api.example.com") and not exact.matches("x.api.example.com")
    assert none.matches("") and not none.matches(None) and not none.matches("api.example.com")
    assert wild.covers(exact) and wild.covers(wild) and not exact.covers(wild) and not wild.covers(none)
    for bad in ("api.*.com", "*", "a..b", "-x.com", "x" * 64 + ".com", "näme.com", 5):
        with pytest.raises(ValueError):
            Pattern.parse(bad)


def test_rules_by_name_are_validated_with_clear_errors():
    rule = parse_rule({"id": "r", "match": {"dest_fqdn": "*.Example.com", "dest_port": 443}, "action": "deny"})
    assert rule.kind == "connect" and rule.to_spec()["match"] == {"dest_fqdn": "*.example.com", "dest_port": 443}
    errors = {
        "by address or by name": {"dest_fqdn": "a.test", "dest_ip": "127.0.0.1/32"},
        "one port": {"dest_fqdn": "a.test", "dest_port": "80-90"},
        "may only open a name": {"dest_fqdn": "a.*.test"},
        "not a valid DNS label": {"dest_fqdn": "bad_.-x.test"},
        "one kind of event": {"dest_fqdn": "a.test", "binary": "/bin/sh"},
    }
    for message, match in errors.items():
        with pytest.raises(RuleError, match=message):
            parse_rule({"id": "r", "match": match, "action": "deny"})


def answer_to(name: str, *addresses: str) -> bytes:
    """A real response's bytes, as the test DNS server sends it."""
    server = DnsServer("127.53.53.54", port=0)
    try:
        server.set(name, *addresses)
        return server.answer(dns.message.make_query(name, "A").to_wire())
    finally:
        server.stop()


def test_the_question_names_an_answer_even_cut_short_and_garbage_is_refused():
    wire = answer_to("API.Example.com", "127.1.2.3", "127.1.2.4")
    assert question_name(wire) == "api.example.com"
    assert question_name(wire[:40]) == "api.example.com"  # the kernel read only so much
    for garbage in (b"\x00" * 5, wire[:14]):
        with pytest.raises(ValueError):
            question_name(garbage)


def test_names_are_kept_as_they_came_read_when_needed_and_bounded():
    names = Names(cap=3)
    wire = answer_to("a.test", "127.0.0.1")
    names.heard(11, wire)
    names.heard(11, b"unread: the hash is known")
    assert names.counts == {"answers": 2, "names": 1} and isinstance(names.by_hash[11], bytes)
    assert names.name(11) == "a.test" and names.by_hash[11] == "a.test"  # read once, then kept read
    for i in range(5):
        names.heard(100 + i, answer_to(f"n{i}.test"))
    assert len(names.by_hash) == 3 and names.name(11) is None
    with pytest.raises(ValueError):
        names.heard(12, b"garbage")
    names.heard(13, wire[:12] + b"\x05ab")  # one question, cut inside its name
    assert names.name(13) is None and names.counts["unreadable"] == 1


def kernel_call(name_hash: int, cgroup_id: int = 5) -> dict:
    return {"mono_ns": time.monotonic_ns(), "cgroup_id": cgroup_id, "folded": 0, "pid": 1, "tid": 1, "uid": 0,
            "gid": 0, "slot": 0, "dest_ip": "127.1.2.3", "dest_port": 80, "family": 4, "kernel_verdict": "allow",
            "op": "connect", "comm": "curl", "rule_id": "", "name_hash": name_hash}  # fmt: skip


def test_a_call_waits_for_the_answer_that_named_it_and_not_longer(monkeypatch):
    enforcer = SimpleNamespace(scope_ids={5}, monitored={5}, in_scope=lambda _p: True, notes=[], policy_version=1)
    agent = Agent(backends=(), enforcer=enforcer)
    agent.cgroups.path = lambda _cgid: "/x.slice/docker-a.scope"
    wire = answer_to("api.example.com", "127.1.2.3")
    hashed = name_hash([b"api", b"example", b"com"])
    agent.handle("kernel", kernel_call(hashed))
    assert not agent.outbox and len(agent.unnamed) == 1  # the answer is still on the other pipe
    agent.handle("kernel", kernel_call(0))  # never resolved: goes on at once, named ""
    assert [e["dest_name"] for e in agent.outbox] == [""]
    agent.handle_dns("dns", {"cgroup_id": 5, "name_hash": hashed, "message": wire, "mono_ns": 0, "cut": False})
    assert [e["dest_name"] for e in agent.outbox] == ["", "api.example.com"] and not agent.unnamed
    agent.handle("kernel", kernel_call(12345))  # an answer that never comes (lost): waits NAME_WAIT, then unnamed
    monkeypatch.setattr("monitor.agent.NAME_WAIT", 0)
    agent.release_unnamed(force=True)
    assert agent.outbox[-1]["dest_name"] is None and agent.names.counts["calls_unnamed"] == 1


def test_answers_learned_from_nothing_are_reported_once_a_window_per_container_and_reason():
    from monitor.dns import RefusedAnswers, refused_reason

    query = dns.message.make_query("ok.test", "A").to_wire()
    record = {"cgroup_id": 7, "peer": "127.0.0.1", "message": query, "unmatched": True, "untrusted": True}
    assert refused_reason(record) == "untrusted"
    assert refused_reason(record | {"untrusted": False}) == "unsolicited"
    assert refused_reason(record | {"forged": True}) == "forged"
    assert refused_reason({"unmatched": False}) is None
    reports = RefusedAnswers(every=10)
    first = reports.add(record, "untrusted", now=100.0)
    assert first == {"cgroup_id": 7, "reason": "untrusted", "count": 1, "peer": "127.0.0.1", "window_s": 0,
                     "name": "ok.test"}  # fmt: skip
    assert reports.add(record, "untrusted", 101.0) is None and reports.add(record, "untrusted", 102.0) is None
    other = reports.add(record | {"cgroup_id": 8}, "untrusted", 102.0)  # another container: its own at once
    assert other["cgroup_id"] == 8 and other["count"] == 1
    assert reports.due(105.0) == []
    [summed] = reports.due(110.0)
    assert (summed["cgroup_id"], summed["count"], summed["window_s"]) == (7, 2, 9)
    assert reports.due(125.0) == [] and reports.add(record, "untrusted", 125.0)["count"] == 1  # quiet: at once again
    reports.add(record | {"message": b"garbage"}, "untrusted", 126.0)
    [last] = reports.due(126.0, force=True)
    assert last["name"] == "" and last["count"] == 1


def test_the_trusted_resolvers_are_the_hosts_its_stubs_upstream_dockers_and_the_configured(tmp_path):
    from monitor import resolvers
    from monitor.kernel.layout import encode_resolver

    host, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text("nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
    assert resolvers.trusted(["127.53.53.53"], str(host), str(upstream)) == {
        "127.0.0.53", "192.0.2.53", "2001:db8::53", "127.0.0.11", "127.53.53.53"}  # fmt: skip
    host.write_text("nameserver 192.0.2.1\n")  # not a stub: its upstream is not the containers'
    assert resolvers.trusted((), str(host), str(upstream)) == {"192.0.2.1", "127.0.0.11"}
    assert resolvers.trusted((), str(tmp_path / "missing"), str(upstream)) >= {"127.0.0.11", "192.0.2.53"}
    with pytest.raises(ValueError, match="not a resolver's IP address"):
        resolvers.trusted(["dns.example"], str(host))
    assert encode_resolver("::ffff:127.0.0.11") == encode_resolver("127.0.0.11")  # as packets carry it
