"""Ingress rules: what the policy accepts, and the blocklist tries the kernel gets (the
longest matching prefix carries the first-matching rule; expiries on the kernel's clock)."""

import datetime as dt
import ipaddress
import time

import pytest
import yaml

from monitor.kernel.compile import compile_rules
from monitor.kernel.layout import BLOCK, SRC_KEY4, SRC_KEY6, encode_source_key
from monitor.rules import RuleError, RuleSet, parse_rule


def rule(**kw):
    return {"id": kw.pop("id", "r"), "match": kw.pop("match"), "action": kw.pop("action", "deny"), **kw}


def test_ingress_rules_name_only_a_source_and_expire_with_a_zone():
    r = parse_rule(rule(match={"source_ip": "198.18.0.0/24"}, expires="2026-12-01T00:00:00Z"))
    assert r.kind == "ingress" and r.expires == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert r.to_spec()["expires"] == "2026-12-01T00:00:00Z" and r.to_spec()["match"] == {"source_ip": "198.18.0.0/24"}
    from_yaml = yaml.safe_load("expires: 2026-12-01 01:00:00+01:00")["expires"]  # YAML reads it as a datetime
    assert parse_rule(rule(match={"source_ip": "::/0"}, expires=from_yaml)).expires == r.expires
    errors = {
        "names only the source": rule(match={"source_ip": "198.18.0.0/24", "container": "x"}),
        "not a valid CIDR": rule(match={"source_ip": "198.18.0.1/24"}),
        "ingress rules": rule(match={"dest_ip": "127.0.0.1/32"}, expires="2026-12-01T00:00:00Z"),
        "with its zone": rule(match={"source_ip": "198.18.0.0/24"}, expires="2026-12-01 00:00"),
    }
    for message, spec in errors.items():
        with pytest.raises(RuleError, match=message):
            parse_rule(spec)


def decode(compiled, family=4):
    fmt = SRC_KEY4 if family == 4 else SRC_KEY6
    out = {}
    for key, value in compiled.entries[f"block{family}"].items():
        prefixlen, addr = fmt.unpack(key)
        net = ipaddress.ip_network((addr, prefixlen))
        out[str(net)] = BLOCK.unpack(value)
    return out


def test_the_tries_carry_the_first_match_and_expiries_on_the_monotonic_clock():
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    gone = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    specs = [
        rule(id="allow-one", priority=1, match={"source_ip": "198.18.0.1/32"}, action="allow"),
        rule(id="block-net", priority=2, match={"source_ip": "198.18.0.0/16"}, expires=soon.isoformat()),
        rule(id="block-inner", priority=3, match={"source_ip": "198.18.5.0/24"}),  # below block-net: never first
        rule(id="over", match={"source_ip": "198.19.0.0/16"}, expires=gone.isoformat()),
        rule(id="v6", match={"source_ip": "2001:db8::/32"}, mode="audit"),
    ]
    before = time.monotonic_ns()
    compiled = compile_rules(RuleSet.from_specs(specs, 1), [])
    v4 = decode(compiled)
    assert set(v4) == {"198.18.0.1/32", "198.18.0.0/16", "198.18.5.0/24"}  # the expired rule left out
    slots = compiled.slots
    assert v4["198.18.0.1/32"][1:3] == (slots["allow-one"], 0)
    assert v4["198.18.5.0/24"][1:3] == (slots["block-net"], 2), "flattened: the /16 rule ranks first"
    expires = v4["198.18.0.0/16"][0]
    assert before + 59 * 10**9 < expires < time.monotonic_ns() + 61 * 10**9
    assert v4["198.18.0.1/32"][0] == 0  # never
    assert decode(compiled, 6)["2001:db8::/32"][1:4] == (slots["v6"], 2, 1)  # audit: counted, passed
    assert compiled.next_expiry == dt.datetime.fromisoformat(soon.isoformat())
    assert encode_source_key(ipaddress.ip_network("198.18.0.0/16")) in compiled.entries["block4"]
