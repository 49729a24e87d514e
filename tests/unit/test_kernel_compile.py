"""The trie compiler: the kernel's four longest-prefix lookups must give the rule engine's
first match, for any rule set. Checked against the engine on random policies and flows,
by simulating the program's lookups on the compiled entries."""

import ipaddress
import random

import pytest

from monitor.files import Watch, watched
from monitor.kernel.compile import MAX_PORTS_PER_RULE, Scope, compile_rules
from monitor.kernel.layout import (
    FILE_SCOPED,
    FILE_WATCHED,
    PATH_KEY,
    SLOT,
    KernelRule,
    access_bits,
    decode_file_rule,
    decode_key,
    decode_path_key,
    encode_key,
)
from monitor.rules import Exec, Flow, Open, RuleSet

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


EXEC_PATHS = ["/bin/sh", "/bin/bash", "/usr/bin/nc", "/dev/shm/x", "/dev/shm/a/b", "/tmp/evil", "/bin/sha1sum"]


def kernel_exec_decision(compiled, scope: Scope, path: str):
    """What process.bpf.h computes: the better of the (cgroup, path) and (0, path) longest matches."""
    best = None
    data = path.encode() + b"\0"
    for cgid in (scope.cgroup_id, 0):
        hits = []
        for key, value in compiled.entries["exec_rules"].items():
            prefixlen, kcg, kpath = PATH_KEY.unpack(key)
            n = (prefixlen - 64) // 8
            if kcg == cgid and data[:n] == kpath[:n]:
                hits.append((n, KernelRule.decode(value)))
        if hits:
            rule = max(hits, key=lambda h: h[0])[1]
            if best is None or rule.rank < best.rank:
                best = rule
    return best


def random_exec_rule(rng, i):
    match = {"binary": rng.choice(["/bin/sh", "/bin/*", "/dev/shm/*", "/usr/bin/nc", "/bin/sh*", "*/evil"])}
    if rng.random() < 0.4:
        match["container"] = rng.choice(["app-a", "app-b", "app-*"])
    if rng.random() < 0.1:
        match["parent"] = "*/nginx"
    return {
        "id": f"x{i}",
        "priority": rng.randrange(5),
        "match": match,
        "action": rng.choice(["allow", "alert", "deny"]),
    }


@pytest.mark.parametrize("seed", range(40))
def test_the_exec_trie_kills_only_what_the_rule_engine_denies(seed):
    """A kernel deny is always the engine's first match; an engine deny the kernel cannot
    apply (a glob, a parent, or below one) is a note, never silently missing."""
    rng = random.Random(seed)
    ruleset = RuleSet.from_specs([random_exec_rule(rng, i) for i in range(rng.randrange(1, 10))], 1)
    compiled = compile_rules(ruleset, SCOPES)
    noted = {n["rule_id"] for n in compiled.notes}
    for scope in SCOPES:
        for path in EXEC_PATHS:
            expected = ruleset.evaluate_exec(Exec(path, ("/usr/sbin/nginx",), scope.cgroup_id, None, scope.container))
            got = kernel_exec_decision(compiled, scope, path)
            if got is not None and got.action == "deny":
                assert expected is not None and got.rule_id == expected.id, (path, scope)
            if expected is not None and expected.action == "deny" and expected.id not in noted:
                assert got is not None and got.rule_id == expected.id, (path, scope)


def test_exec_rules_never_land_in_the_connect_tries_and_say_what_the_kernel_cannot_do():
    ruleset = RuleSet.from_specs(
        [
            {"id": "no-sh", "match": {"binary": "/bin/sh"}, "action": "deny"},
            {"id": "shm", "match": {"binary": "/dev/shm/*"}, "action": "deny"},
            {"id": "from-nginx", "match": {"binary": "/bin/*", "parent": "*/nginx"}, "action": "deny"},
            {"id": "later", "match": {"binary": "/usr/bin/nc"}, "action": "deny"},
        ],
        1,
    )
    compiled = compile_rules(ruleset, SCOPES)
    assert not compiled.entries["rules4"] and not compiled.entries["rules6"]
    keys = {PATH_KEY.unpack(k)[2].rstrip(b"\0").decode(): PATH_KEY.unpack(k)[0] for k in compiled.entries["exec_rules"]}
    assert keys == {"/bin/sh": 64 + 8 * 8, "/dev/shm/": 64 + 8 * 9}  # exact includes the NUL; a prefix does not
    notes = {n["rule_id"]: n["message"] for n in compiled.notes}
    assert "judged by the agent after the exec" in notes["from-nginx"]
    assert "rule from-nginx above it is judged in user space" in notes["later"]


FILE_PATHS = ["/etc/shadow", "/etc/shadowx", "/etc/hosts", "/etc/ssl/a.pem", "/run/docker.sock", "/home/u/.ssh/id",
              "/tmp/x", "/usr/bin/ls", "/e", "/", "/etc", "/run/docker.sockets"]  # fmt: skip
ACCESS_SETS = [("read",), ("write", "create", "truncate"), ("read", "write"), ("write",)]


def file_config(compiled) -> int:
    return SLOT.unpack(compiled.entries["file_config"][SLOT.pack(0)])[0]


def kernel_file_decision(compiled, scope: Scope, path: str, access):
    """What file.bpf.h computes: watch bits ORed over the (cgroup, path) and (0, path)
    longest matches, and the best-ranked verdict over the open's access bits."""
    if not file_config(compiled) & FILE_WATCHED:
        return 0, None
    data = path.encode() + b"\0"
    bits = access_bits(access)
    watch, best = 0, None
    for cgid in (scope.cgroup_id, 0) if file_config(compiled) & FILE_SCOPED else (0,):
        hits = []
        for key, value in compiled.entries["file_rules"].items():
            prefixlen, kcg, kpath = PATH_KEY.unpack(key)
            n = (prefixlen - 64) // 8
            if kcg == cgid and data[:n] == kpath[:n]:
                hits.append((n, decode_file_rule(value)))
        if hits:
            entry_watch, verdicts = max(hits, key=lambda h: h[0])[1]
            watch |= entry_watch
            for bit, verdict in enumerate(verdicts):
                if bits & (1 << bit) and verdict and (best is None or verdict[0] < best[0]):
                    best = verdict
    return watch & bits, best


def random_file_rule(rng, i):
    match = {"path": rng.choice(["/etc/shadow", "/etc/*", "/etc/ssl/*", "/run/docker.sock", "/home/*/.ssh/*", "/*",
                                 "/e", "/et*", "*shadow"])}  # fmt: skip
    if rng.random() < 0.5:
        match["access"] = list(rng.choice(ACCESS_SETS))
    if rng.random() < 0.3:
        match["container"] = rng.choice(["app-a", "app-b", "app-*"])
    if rng.random() < 0.1:
        match["binary"] = "*/nginx"
    return {
        "id": f"f{i}",
        "priority": rng.randrange(5),
        "match": match,
        "action": rng.choice(["allow", "alert", "deny"]),
    }


@pytest.mark.parametrize("seed", range(40))
def test_the_file_trie_reports_what_rules_name_and_kills_only_what_the_engine_denies(seed):
    """Every open a rule or watch matches is reported by the kernel (the agent then judges
    it); a kernel deny is the engine's first match; an engine deny the kernel cannot apply
    is a note."""
    rng = random.Random(seed)
    ruleset = RuleSet.from_specs([random_file_rule(rng, i) for i in range(rng.randrange(1, 10))], 1)
    watches = (Watch("/tmp/*", ("write",)),)
    compiled = compile_rules(ruleset, SCOPES, watches=watches)
    slots = {slot: rid for rid, slot in compiled.slots.items()}
    noted = {n["rule_id"] for n in compiled.notes}
    for scope in SCOPES:
        for path in FILE_PATHS:
            for access in ACCESS_SETS:
                op = Open(path, access, "/usr/sbin/nginx", (), scope.cgroup_id, None, scope.container)
                expected = ruleset.evaluate_open(op)
                reported, got = kernel_file_decision(compiled, scope, path, access)
                named = any(r.matches_open(op) for r in ruleset.rules) or watched(path, access, watches)
                assert not named or reported, (path, access, scope)
                if got is not None and got[2] == "deny":
                    assert expected is not None and slots[got[1]] == expected.id, (path, access, scope)
                if expected is not None and expected.action == "deny" and expected.id not in noted:
                    assert got is not None and slots[got[1]] == expected.id, (path, access, scope)


def test_file_watches_let_a_globs_literal_prefix_through_and_rules_say_what_the_kernel_cannot_do():
    ruleset = RuleSet.from_specs(
        [
            {"id": "shadow", "match": {"path": "/etc/shadow", "access": ["read"]}, "action": "deny"},
            {"id": "keys", "match": {"path": "/home/*/.ssh/*"}, "action": "deny"},
            {"id": "bin", "match": {"path": "/usr/bin/*", "access": ["write"]}, "action": "deny"},
        ],
        1,
    )
    compiled = compile_rules(ruleset, SCOPES, watches=(Watch("/proc/*/mem"),))
    entries = {decode_path_key(k)[::2]: decode_file_rule(v) for k, v in compiled.entries["file_rules"].items()}
    assert set(entries) == {("/etc/shadow", True), ("/home/", False), ("/usr/bin/", False), ("/proc/", False)}
    watch, verdicts = entries[("/etc/shadow", True)]
    assert watch == access_bits(["read"])  # only what the rule names is reported
    assert verdicts[0] is not None and verdicts[1] is None  # a read is killed, a write is not this rule's
    assert "judged by the agent after the open" in {n["rule_id"]: n["message"] for n in compiled.notes}["keys"]
    assert "rule keys above it" in {n["rule_id"]: n["message"] for n in compiled.notes}["bin"]


def test_the_file_config_says_whether_anything_is_watched_and_whether_rules_are_scoped():
    empty = compile_rules(RuleSet.from_specs([], 1), SCOPES)
    assert file_config(empty) == 0  # nothing watched: an open costs the program no read at all
    watching = compile_rules(RuleSet.from_specs([], 1), SCOPES, watches=(Watch("/etc/shadow"),))
    assert file_config(watching) == FILE_WATCHED
    scoped = compile_rules(RuleSet.from_specs([{"id": "s", "match": {"container": "app-a", "path": "/x"},
                                                "action": "alert"}], 1), SCOPES)  # fmt: skip
    assert file_config(scoped) == FILE_WATCHED | FILE_SCOPED
