"""The rule engine: first match by priority, CIDR v4/v6, ports and ranges, selectors."""

import ipaddress
import random

import pytest

from monitor.rules import Exec, Flow, Open, RuleError, RuleSet, parse_port, parse_rule


def rules(*specs):
    return RuleSet.from_specs(list(specs))


def verdict(ruleset, ip, port, **scope):
    rule = ruleset.evaluate(Flow.of(ip, port, **scope))
    return (rule.id, rule.action) if rule else None


def test_no_match_means_allow():
    rs = rules({"id": "r1", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"})
    assert verdict(rs, "127.10.10.6", 443) is None


def test_first_match_in_priority_order_wins():
    rs = rules(
        {"id": "broad", "match": {"dest_ip": "127.0.0.0/8"}, "action": "alert"},
        {"id": "narrow", "priority": 10, "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"},
        {"id": "later", "match": {"dest_ip": "127.10.10.0/24"}, "action": "allow"},
    )
    assert verdict(rs, "127.10.10.5", 1) == ("narrow", "deny")
    assert verdict(rs, "127.10.10.6", 1) == ("broad", "alert")  # same priority: file order


def test_cidr_v4_and_v6_do_not_cross():
    rs = rules(
        {"id": "v6", "match": {"dest_ip": "fd00::/8"}, "action": "deny"},
        {"id": "v4", "match": {"dest_ip": "127.0.0.0/8"}, "action": "alert"},
    )
    assert verdict(rs, "fd12::1", 80) == ("v6", "deny")
    assert verdict(rs, "fe80::1", 80) is None
    assert verdict(rs, "127.1.2.3", 80) == ("v4", "alert")
    assert verdict(rs, "::1", 80) is None


def test_ipv4_mapped_ipv6_is_matched_as_ipv4():
    rs = rules({"id": "v4", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"})
    assert verdict(rs, "::ffff:127.10.10.5", 80) == ("v4", "deny")


def test_ports_and_ranges():
    rs = rules(
        {"id": "db", "match": {"dest_port": 3306}, "action": "deny"},
        {"id": "web", "match": {"dest_port": "8000-8080"}, "action": "alert"},
    )
    assert verdict(rs, "127.0.0.2", 3306) == ("db", "deny")
    assert verdict(rs, "127.0.0.2", 8000) == ("web", "alert")
    assert verdict(rs, "127.0.0.2", 8080) == ("web", "alert")
    assert verdict(rs, "127.0.0.2", 8081) is None
    assert parse_port("22- 25") == (22, 25)


def test_container_selectors():
    rs = rules(
        {"id": "by-id", "match": {"cgroup_id": 4242}, "action": "deny"},
        {"id": "by-name", "match": {"container": "edge-app-staging", "dest_port": 3306}, "action": "deny"},
        {"id": "by-glob", "match": {"container": "edge-*"}, "action": "alert"},
        {"id": "by-path", "match": {"cgroup_path": "/kubepods.slice/*"}, "action": "alert"},
    )
    assert verdict(rs, "127.0.0.2", 1, cgroup_id=4242) == ("by-id", "deny")
    assert verdict(rs, "127.0.0.2", 3306, container="edge-app-staging") == ("by-name", "deny")
    assert verdict(rs, "127.0.0.2", 3306, container="edge-app-prod") == ("by-glob", "alert")
    assert verdict(rs, "127.0.0.2", 3306, container="other") is None
    assert verdict(rs, "127.0.0.2", 1, cgroup_path="/kubepods.slice/pod1/x") == ("by-path", "alert")
    assert verdict(rs, "127.0.0.2", 3306) is None  # the host is not a container


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"id": "x", "match": {"dest_ip": "300.1.1.1/32"}, "action": "deny"}, "match.dest_ip"),
        ({"id": "x", "match": {"dest_ip": "10.0.0.1/24"}, "action": "deny"}, "match.dest_ip"),  # host bits set
        ({"id": "x", "match": {"dest_port": 0}, "action": "deny"}, "match.dest_port"),
        ({"id": "x", "match": {"dest_port": 65536}, "action": "deny"}, "match.dest_port"),
        ({"id": "x", "match": {"dest_port": "90-80"}, "action": "deny"}, "match.dest_port"),
        ({"id": "x", "match": {"dest_port": True}, "action": "deny"}, "match.dest_port"),
        ({"id": "x", "match": {}, "action": "block"}, "action"),
        ({"id": "x", "match": {}, "action": "deny", "severity": "urgent"}, "severity"),
        ({"id": "x", "match": {"host": "a"}, "action": "deny"}, "match.host"),
        ({"id": "x", "match": {}, "action": "deny", "extra": 1}, "extra"),
        ({"id": "bad id!", "match": {}, "action": "deny"}, "id"),
        ({"id": "x", "match": "everything", "action": "deny"}, "match"),
        ({"id": "x", "match": {"cgroup_id": -1}, "action": "deny"}, "match.cgroup_id"),
        ({"id": "x", "match": {}, "action": "deny", "tags": "T1071"}, "tags"),
    ],
)
def test_malformed_rules_name_the_field(spec, field):
    with pytest.raises(RuleError) as err:
        parse_rule(spec)
    assert err.value.field == field


def test_spec_round_trip():
    spec = {
        "id": "r",
        "description": "d",
        "match": {"container": "c", "dest_ip": "fd00::/8", "dest_port": "1-2"},
        "action": "deny",
        "priority": 5,
        "severity": "high",
        "tags": ["T1"],
    }
    assert parse_rule(spec).to_spec() == spec


def test_audit_mode_is_for_deny_rules_and_round_trips():
    rule = parse_rule({"id": "try-it", "match": {"dest_port": 22}, "action": "deny", "mode": "audit"})
    assert rule.audit and rule.to_spec()["mode"] == "audit"
    assert "mode" not in parse_rule({"id": "x", "match": {}, "action": "deny"}).to_spec()
    with pytest.raises(RuleError, match="audit applies to deny rules only"):
        parse_rule({"id": "x", "match": {}, "action": "alert", "mode": "audit"})
    with pytest.raises(RuleError, match="mode: must be one of enforce, audit"):
        parse_rule({"id": "x", "match": {}, "action": "deny", "mode": "dry-run"})


@pytest.mark.parametrize("seed", range(30))
def test_the_index_agrees_with_first_match_in_order(seed):
    rng = random.Random(seed)
    specs = []
    for i in range(rng.randrange(1, 60)):
        match = {}
        roll = rng.random()
        if roll < 0.5:
            if rng.random() < 0.8:
                length = rng.choice([8, 16, 24, 32])
                addr = f"127.{rng.randrange(3)}.{rng.randrange(3)}.{rng.randrange(5)}/{length}"
                match["dest_ip"] = str(ipaddress.ip_network(addr, strict=False))
            else:
                match["dest_ip"] = rng.choice(["::1/128", "fd00::/8", "::/0", "0.0.0.0/0"])
        if rng.random() < 0.4:
            match["dest_port"] = rng.choice([80, 443, "80-90", "1-65535"])
        if rng.random() < 0.3:
            match["container"] = rng.choice(["app-a", "app-b", "app-*"])
        if rng.random() < 0.1:
            match["cgroup_id"] = rng.choice([11, 12])
        specs.append({"id": f"r{i}", "priority": rng.randrange(4), "match": match,
                      "action": rng.choice(["allow", "alert", "deny"])})  # fmt: skip
    ruleset = RuleSet.from_specs(specs)
    for _ in range(200):
        ip = rng.choice([f"127.{rng.randrange(3)}.{rng.randrange(3)}.{rng.randrange(5)}", "::1", "fd00::5",
                         "::ffff:127.1.1.1", "not-an-ip"])  # fmt: skip
        flow = Flow.of(ip, rng.choice([80, 85, 443, 22]), cgroup_id=rng.choice([11, 12, None]),
                       container=rng.choice(["app-a", "app-b", None]))  # fmt: skip
        assert ruleset.evaluate(flow) is ruleset.evaluate_linear(flow), (ip, flow)


def test_exec_rules_match_binary_and_parent_and_never_judge_connections():

    rs = RuleSet.from_specs(
        [
            {"id": "shell-from-web", "match": {"binary": "/bin/*sh", "parent": "*/nginx"}, "action": "alert"},
            {"id": "no-shm", "match": {"binary": "/dev/shm/*", "container": "app-*"}, "action": "deny"},
        ]
    )
    assert rs.evaluate_exec(Exec("/bin/bash", ("/usr/sbin/nginx", "nginx"))).id == "shell-from-web"
    assert rs.evaluate_exec(Exec("/bin/bash", ("", "nginx"))) is None  # task name "nginx" is not "*/nginx"
    assert rs.evaluate_exec(Exec("/dev/shm/x", ("",), container="app-1")).id == "no-shm"
    assert rs.evaluate_exec(Exec("/dev/shm/x", ("",), container="db")) is None
    assert rs.evaluate(Flow.of("127.0.0.1", 80, container="app-1")) is None  # exec rules never match a connect
    assert rs.rules[1].to_spec()["match"] == {"container": "app-*", "binary": "/dev/shm/*"}


def test_a_rule_cannot_judge_connections_and_execs_at_once():
    with pytest.raises(RuleError, match="one kind of event, not connections and execs"):
        parse_rule({"id": "mixed", "match": {"binary": "/bin/sh", "dest_port": 22}, "action": "deny"})
    with pytest.raises(RuleError, match="not connections and opens"):
        parse_rule({"id": "mixed", "match": {"path": "/etc/*", "dest_ip": "127.0.0.1/32"}, "action": "deny"})
    with pytest.raises(RuleError, match="match.binary: must be a non-empty string"):
        parse_rule({"id": "empty", "match": {"binary": ""}, "action": "deny"})


def test_file_rules_match_path_access_and_opener():
    rs = RuleSet.from_specs(
        [
            {"id": "nginx-may", "match": {"path": "/etc/shadow", "binary": "*/nginx"}, "action": "allow"},
            {"id": "shadow", "match": {"path": "/etc/shadow", "access": ["read"]}, "action": "deny"},
            {"id": "etc-writes", "match": {"path": "/etc/*", "access": ["write", "create", "truncate"]},
             "action": "alert"},
            {"id": "sock", "match": {"container": "app-*", "path": "/run/docker.sock"}, "action": "deny"},
        ]
    )  # fmt: skip
    assert [r.kind for r in rs.rules] == ["open", "open", "open", "open"]
    assert rs.evaluate_open(Open("/etc/shadow", ("read",), binary="/usr/sbin/nginx")).id == "nginx-may"
    assert rs.evaluate_open(Open("/etc/shadow", ("read",), binary="/bin/cat")).id == "shadow"
    assert rs.evaluate_open(Open("/etc/shadow", ("write",), binary="/bin/cat")).id == "etc-writes"
    assert rs.evaluate_open(Open("/etc/passwd", ("read",))) is None  # reading /etc is not writing it
    assert rs.evaluate_open(Open("/etc/x/y", ("write", "create"))).id == "etc-writes"  # * crosses "/"
    assert rs.evaluate_open(Open("/run/docker.sock", ("read", "write"), container="app-1")).id == "sock"
    assert rs.evaluate_open(Open("/run/docker.sock", ("read", "write"), container="db")) is None
    assert rs.evaluate_exec(Exec("/usr/sbin/nginx")) is None  # a file rule naming a binary judges opens only
    assert rs.evaluate(Flow.of("127.0.0.1", 80)) is None
    spec = rs.by_id["etc-writes"].to_spec()
    assert spec["match"] == {"path": "/etc/*", "access": ["write", "create", "truncate"]}
    assert parse_rule(spec) == rs.by_id["etc-writes"]
    assert parse_rule({"id": "one", "match": {"path": "/x", "access": "read"}, "action": "alert"}).access == ("read",)


@pytest.mark.parametrize(
    "match, message",
    [
        ({"access": ["read"]}, "match.access: applies to file rules only"),
        ({"path": "/x", "access": ["exec"]}, "match.access: must be a list of read, write, create, truncate"),
        ({"path": "/x", "access": []}, "match.access: must be a list"),
        ({"path": ""}, "match.path: must be a non-empty string"),
        ({"path": 5}, "match.path: must be a non-empty string"),
    ],
)
def test_bad_file_rules_say_what_is_wrong(match, message):
    with pytest.raises(RuleError, match=message):
        parse_rule({"id": "bad", "match": match, "action": "deny"})


def test_socket_and_unix_socket_rules_are_checked_and_judged():
    from monitor.rules import unix_spellings

    raw = parse_rule({"id": "r", "match": {"container": "web-*", "socket": ["packet", "raw"]}, "action": "deny"})
    assert (raw.kind, raw.socket) == ("socket", ("raw", "packet"))
    assert raw.to_spec()["match"] == {"container": "web-*", "socket": ["raw", "packet"]}
    unix = parse_rule({"id": "u", "match": {"unix_path": "/var/run/docker.sock"}, "action": "deny"})
    assert unix.kind == "unix" and unix_spellings(unix.unix_path) == ("/var/run/docker.sock", "/run/docker.sock")
    assert unix_spellings("/tmp/x.sock") == ("/tmp/x.sock",) and unix_spellings("@abstract") == ("@abstract",)
    for match, text in (({"socket": "tcp"}, "must be one of raw"), ({"socket": []}, "must be one of raw"),
                        ({"socket": "raw", "dest_port": 53}, "names only the kind"),
                        ({"unix_path": "docker.sock"}, "absolute path"), ({"unix_path": "/run/*.sock"}, "wildcards"),
                        ({"unix_path": "/x" * 60}, "longer than 107"),
                        ({"unix_path": "/run/x.sock", "binary": "/bin/sh"}, "names only the path")):  # fmt: skip
        with pytest.raises(RuleError, match=text):
            parse_rule({"id": "bad", "match": match, "action": "deny"})
    rules = RuleSet([raw, unix])
    scope = {"cgroup_id": 5, "cgroup_path": "/docker/x", "container": "web-1"}
    assert rules.evaluate_socket("raw", **scope) is raw and rules.evaluate_socket("icmp", **scope) is None
    assert rules.evaluate_socket("raw", **(scope | {"container": "db"})) is None
    assert rules.evaluate_socket("unix", **scope, path="/run/docker.sock") is unix
    assert rules.evaluate_socket("unix", **scope, path="/run/other.sock") is None
