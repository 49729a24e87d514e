"""Scan rules: what the policy accepts, the `scan_limits` entries the kernel gets (every
container's always, with the summing threshold; a named container's with every container's
rules flattened in, in rank order), and the summary events the agent makes of the
programs' cumulative counts."""

import time

import pytest

from monitor.kernel.compile import FLOOD_MAP, LIMIT_MAP, SCAN_EVERY_MAP, SCAN_MAP, Scope, compile_rules
from monitor.kernel.layout import (
    ACTION_NAMES,
    CGROUP,
    SCAN_LIMITS,
    SCAN_RULE,
    SCAN_RULES_LEN,
    SLOT,
    _cstr,
    decode_limit,
    decode_scan_limits,
)
from monitor.limits import LimitReports
from monitor.rules import DEFAULT_HOLD, Flow, RuleError, RuleSet, parse_rule
from monitor.scans import ScanSums


def rule(**kw):
    return {"id": kw.pop("id", "r"), "match": kw.pop("match", {}), "action": kw.pop("action", "deny"), **kw}


def test_scan_rules_name_containers_a_threshold_and_a_hold():
    r = parse_rule(rule(match={"container": "web-*"}, limit={"new_destinations": 100}, hold=30))
    assert (r.kind, r.limit, r.hold) == ("scan", ("new_destinations", 100), 30)
    assert r.to_spec() | {"description": ""} == {
        "id": "r", "description": "", "match": {"container": "web-*"}, "action": "deny",
        "limit": {"new_destinations": 100}, "hold": 30,
    }  # fmt: skip
    assert parse_rule(rule(limit={"new_destinations": 5})).hold == DEFAULT_HOLD
    assert parse_rule(rule(action="alert", limit={"new_destinations": 5})).hold is None
    scan_only = RuleSet.from_specs([rule(action="alert", limit={"new_destinations": 5})])
    assert scan_only.evaluate(Flow.of("127.0.0.1", 80)) is None  # judged in the kernel, not per call
    errors = {
        "one of new_destinations": rule(limit=100),
        "unknown limit 'bytes'": rule(limit={"bytes": 100}),
        "from 1 to": rule(limit={"new_destinations": 0}),
        "whole number": rule(limit={"new_destinations": True}),
        "names only containers": rule(match={"dest_port": 22}, limit={"new_destinations": 10}),
        "alerts, or denies": rule(action="allow", limit={"new_destinations": 10}),
        "deny rules only": rule(action="alert", limit={"new_destinations": 10}, hold=5),
        "seconds from 1": rule(limit={"new_destinations": 10}, hold=0),
        "limit rules": rule(match={"dest_port": 22}, hold=5),
        "its match is {}": rule(match={"container": "x"}, limit={"syn_per_source": 100}),
    }
    for message, spec in errors.items():
        with pytest.raises(RuleError, match=message):
            parse_rule(spec)


def decode(compiled) -> dict[int, tuple[int, list]]:
    out = {}
    (every,) = compiled.entries[SCAN_EVERY_MAP].values()  # every container's: the array's one entry
    entries = [(CGROUP.pack(0), every), *compiled.entries[SCAN_MAP].items()]
    assert CGROUP.pack(0) not in compiled.entries[SCAN_MAP]
    for key, value in entries:
        summarise, count, packed = SCAN_LIMITS.unpack(value)
        rules = [SCAN_RULE.unpack_from(packed, i * SCAN_RULE.size) for i in range(count)]
        out[CGROUP.unpack(key)[0]] = (
            summarise,
            [(t, hold // 10**9, ACTION_NAMES[a], bool(audit), _cstr(rid)) for t, _slot, hold, a, audit, rid in rules],
        )
    return out


def test_the_kernel_gets_every_containers_entry_and_the_named_ones_flattened():
    scopes = [Scope(11, "/s/web-1", "web-1"), Scope(12, "/s/db", "db")]
    specs = [
        rule(id="all-alert", priority=5, action="alert", limit={"new_destinations": 500}),
        rule(id="web-deny", priority=1, match={"container": "web-*"}, limit={"new_destinations": 100}, hold=9),
        rule(id="db-audit", priority=9, match={"container": "db"}, limit={"new_destinations": 50}, mode="audit"),
        rule(id="conn", match={"dest_port": 22}),  # not a scan rule
    ]
    compiled = compile_rules(RuleSet.from_specs(specs, 1), scopes, summarise=77)
    assert decode(compiled) == {
        0: (77, [(500, 0, "alert", False, "all-alert")]),
        11: (77, [(100, 9, "deny", False, "web-deny"), (500, 0, "alert", False, "all-alert")]),
        12: (77, [(500, 0, "alert", False, "all-alert"), (50, 60, "deny", True, "db-audit")]),
    }
    assert decode(compile_rules(RuleSet(), [])) == {0: (200, [])}  # summing runs with no rule at all
    many = [rule(id=f"s{i}", action="alert", limit={"new_destinations": 10 + i}) for i in range(SCAN_RULES_LEN + 1)]
    compiled = compile_rules(RuleSet.from_specs(many, 1), [])
    assert len(decode(compiled)[0][1]) == SCAN_RULES_LEN
    assert compiled.notes == [{"rule_id": f"s{SCAN_RULES_LEN}", "message": "more than 4 scan rules apply to a "
                                                                           "container: not judged"}]  # fmt: skip


def entry(calls, denied, **kw):
    return {"calls": calls, "denied": denied, "pid": 7, "uid": 1000, "gid": 100, "comm": "nmap", "family": 4,
            "dest_ip": "127.0.0.9",
            "port_lo": 10, "port_hi": 900, "deny_slot": 3, "blocked_ns": 0, "scanning": True} | kw  # fmt: skip


def test_the_agent_reports_the_growth_of_the_sums_once():
    sums = ScanSums(every=0)  # at every reading (see the next test)
    sums.resume({1: entry(100, 0)})  # summed before this agent: reported by the last one
    assert sums.dump({1: entry(100, 0)}) == []
    (allowed,) = sums.dump({1: entry(150, 0)})
    assert (allowed["count"], allowed["kernel_verdict"], allowed["dest_port"], allowed["dest_port_hi"]) == (
        50, "allow", 10, 900
    )  # fmt: skip
    assert (allowed["pid"], allowed["uid"], allowed["gid"], allowed["comm"]) == (7, 1000, 100, "nmap")
    allowed, refused = sums.dump({1: entry(180, 20), 2: entry(5, 5, dest_ip="::1", family=6)})[:2]
    assert (allowed["count"], refused["count"], refused["slot"]) == (10, 20, 3)
    # a reading that sees a refusal before its call: the refusal waits for its call
    (only,) = sums.dump({1: entry(181, 23)})
    assert (only["count"], only["kernel_verdict"]) == (1, "deny")
    (rest,) = sums.dump({1: entry(183, 23)})
    assert (rest["count"], rest["kernel_verdict"]) == (2, "deny")
    sums.dump({})  # the containers are gone: forgotten
    assert sums.totals == {}


def test_a_going_scan_is_summed_every_few_seconds_and_all_of_it_at_the_end(monkeypatch):
    """Its first sums at once; then one row every REPORT_EVERY seconds, holding what the
    readings in between saw; a container that ends, or an agent that stops, sends the rest."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic_ns", lambda: int(clock[0] * 1e9))
    sums = ScanSums(every=5.0)
    assert [e["count"] for e in sums.dump({1: entry(100, 0)})] == [100]
    clock[0] += 1
    assert sums.dump({1: entry(300, 0)}) == []  # a second later: it waits
    clock[0] += 4
    assert [e["count"] for e in sums.dump({1: entry(500, 0)})] == [400]  # the skipped reading's too
    clock[0] += 1
    assert [(e["cgroup_id"], e["count"]) for e in sums.dump({1: entry(600, 0), 2: entry(10, 0)})] == [(2, 10)]
    assert [e["count"] for e in sums.dump({1: entry(650, 0), 2: entry(20, 0)}, ending=[1])] == [150]
    assert [e["count"] for e in sums.dump({2: entry(30, 0)}, force=True)] == [20]
    assert 1 not in sums.reported  # forgotten with its entry


def test_flood_rules_watch_every_source_and_go_into_one_array_entry():
    r = parse_rule(rule(limit={"syn_per_source": 1000}, hold=10))
    assert (r.kind, r.to_spec()["limit"]) == ("flood", {"syn_per_source": 1000})
    specs = [
        rule(id="flood-alert", priority=9, action="alert", limit={"syn_per_source": 500}),
        rule(id="flood-deny", priority=1, limit={"syn_per_source": 2000}, hold=30),
        rule(id="scan", limit={"new_destinations": 100}),
    ]
    compiled = compile_rules(RuleSet.from_specs(specs, 1), [])
    ((key, value),) = compiled.entries[FLOOD_MAP].items()
    assert key == SLOT.pack(0)
    assert decode_scan_limits(value) == {
        "summarise": 0,
        "rules": [
            {"rule_id": "flood-deny", "threshold": 2000, "slot": compiled.slots["flood-deny"], "hold_s": 30.0,
             "action": "deny", "audit": False},
            {"rule_id": "flood-alert", "threshold": 500, "slot": compiled.slots["flood-alert"], "hold_s": 0.0,
             "action": "alert", "audit": False},
        ],
    }  # fmt: skip
    assert decode_scan_limits(compile_rules(RuleSet(), []).entries[FLOOD_MAP][SLOT.pack(0)])["rules"] == []


def test_rate_limits_deny_per_container_and_go_into_one_entry_each():
    r = parse_rule(rule(match={"container": "web-*"}, limit={"egress_bytes_per_s": 1_000_000}))
    assert (r.kind, r.hold) == ("limit", None)
    for message, spec in {
        "holds the container to it: deny": rule(action="alert", limit={"connections_per_s": 5}),
        "scan and SYN flood rules only": rule(limit={"connections_per_s": 5}, hold=3),
        "names only containers": rule(match={"dest_port": 80}, limit={"egress_bytes_per_s": 5}),
    }.items():
        with pytest.raises(RuleError, match=message):
            parse_rule(spec)
    scopes = [Scope(11, "/s/web-1", "web-1"), Scope(12, "/s/db", "db")]
    specs = [
        rule(id="web-egress", priority=1, match={"container": "web-*"}, limit={"egress_bytes_per_s": 10_000_000}),
        rule(id="all-egress", priority=2, limit={"egress_bytes_per_s": 1_000_000}),  # web's own comes first
        rule(id="all-conns", priority=3, limit={"connections_per_s": 50}, mode="audit"),
    ]
    compiled = compile_rules(RuleSet.from_specs(specs, 1), scopes)
    limits = {CGROUP.unpack(k)[0]: decode_limit(v) for k, v in compiled.entries[LIMIT_MAP].items()}
    assert set(limits) == {11, 12}  # every container on its own: a rate is per container
    assert (limits[11]["egress_rate"], limits[12]["egress_rate"]) == (10_000_000, 1_000_000)
    assert limits[11]["egress_slot"] == compiled.slots["web-egress"]
    assert limits[12]["conn_rate"] == 50 and limits[12]["conn_audit"] and limits[12]["refused"] == 0


def test_limit_reports_come_as_a_limit_bites_then_once_a_minute():
    reports = LimitReports(every=60)
    entry = {"held_bytes": 0, "held_packets": 0, "refused": 0}
    reports.resume({1: entry})
    assert reports.add({1: entry}, now=0) == []
    ((cgid, _e, held, window),) = reports.add({1: entry | {"held_bytes": 5000, "held_packets": 4}}, now=1)
    assert (cgid, held, window) == (1, {"held_bytes": 5000, "held_packets": 4, "refused": 0}, 1.0)
    assert reports.add({1: entry | {"held_bytes": 9000, "held_packets": 7}}, now=30) == []  # within the minute
    ((_c, _e, held, window),) = reports.add({1: entry | {"held_bytes": 9500, "held_packets": 8}}, now=61)
    assert held == {"held_bytes": 4500, "held_packets": 4, "refused": 0} and window == 31
    ((_c, _e, held, _w),) = reports.add({1: entry | {"held_bytes": 100, "held_packets": 1}}, now=200)
    assert held["held_bytes"] == 100  # written afresh (a rule change): the whole value is new
