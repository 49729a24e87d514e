"""The kernel refuses what deny rules say, in cgroups these tests make, and nothing else."""

import os
import shutil
import subprocess
import sys

import pytest

from monitor.kernel import batch, bpftool
from monitor.kernel.enforcer import OBJECT
from monitor.kernel.layout import CGROUP, MAX_FLOWS, MON_OWN
from monitor.rules import MAX_LIMIT, RuleSet
from monitor.testbed import listen

from .conftest import ROOT, connect_from

pytestmark = pytest.mark.kernel
EPERM = 1


def policy(version, *rules):
    return RuleSet.from_specs(list(rules), version)


def test_ipv4_deny_refuses_only_its_address(enforcement, targets):
    app = enforcement.container("app-a")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(policy(1, {"id": "deny-5", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM
    assert connect_from(app, "127.8.8.8", targets.port) == 0
    assert connect_from(app, "::ffff:127.10.10.5", targets.port) == EPERM  # v4-mapped is still IPv4
    counters = enforcement.enforcer.counters()
    assert counters["deny-5"] == 2 and counters["(no rule)"] == 1


def test_the_any_address_is_judged_as_this_host(enforcement, targets):
    """connect() to 0.0.0.0 reaches 127.0.0.1, and to :: reaches ::1: a deny of them holds
    for the any address too."""
    app = enforcement.container("app-a")
    local = listen("127.0.0.1", 0)
    port, (denied, other) = local.getsockname()[1], targets.v6_ports
    try:
        enforcement.enforcer.start()
        assert connect_from(app, "0.0.0.0", port) == 0  # reached, before any rule
        enforcement.enforcer.sync(policy(
            1,
            {"id": "no-local", "match": {"dest_ip": "127.0.0.1/32"}, "action": "deny"},
            {"id": "no-v6-local", "match": {"dest_ip": "::1/128", "dest_port": denied}, "action": "deny"},
        ))  # fmt: skip
        assert connect_from(app, "0.0.0.0", port) == EPERM
        assert connect_from(app, "::ffff:0.0.0.0", port) == EPERM
        assert connect_from(app, "::", denied) == EPERM
        assert connect_from(app, "::", other) == 0  # another port: reached
    finally:
        local.close()


def test_a_reused_counter_slot_starts_from_zero(enforcement, targets):
    """Counters are an array by slot: a slot a removed rule counted into starts again at 0."""
    app = enforcement.container("app-a")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(policy(1, {"id": "old", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM
    slot = enforcer.slots["old"]
    assert enforcer.counters()["old"] == 2
    enforcer.sync(policy(2))
    assert "old" not in enforcer.counters()
    enforcer.sync(policy(3, {"id": "new", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    assert enforcer.slots["new"] == slot and enforcer.counters()["new"] == 0
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM
    assert enforcer.counters() == {"new": 1, "(no rule)": 0}


def test_ipv6_deny_and_port_only_deny(enforcement, targets):
    app = enforcement.container("app-a")
    denied, open_port = targets.v6_ports
    enforcement.enforcer.start()
    enforcement.enforcer.sync(
        policy(
            1,
            {"id": "deny-v6", "match": {"dest_ip": "::1/128", "dest_port": denied}, "action": "deny"},
            {"id": "deny-port", "match": {"dest_port": targets.port}, "action": "deny"},
        )
    )
    assert connect_from(app, "::1", denied) == EPERM
    assert connect_from(app, "::1", open_port) == 0
    assert connect_from(app, "127.8.8.8", targets.port) == EPERM  # port-only: any address
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM
    assert connect_from(app, "::1", targets.port) != 0  # nothing listens; the rule covers v6 too
    assert connect_from(app, "::1", targets.port) == EPERM


def test_container_scoped_deny_spares_the_other_container_and_new_ones_get_it(enforcement, targets):
    a, b = enforcement.container("app-a"), enforcement.container("app-b")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(
        policy(1, {"id": "a-only", "match": {"container": "*app-a", "dest_ip": "127.8.8.8/32"}, "action": "deny"})
    )
    assert connect_from(a, "127.8.8.8", targets.port) == EPERM
    assert connect_from(b, "127.8.8.8", targets.port) == 0
    late = enforcement.container("late-app-a")  # appears after start: the programs run for it at once...
    assert connect_from(late, "127.8.8.8", targets.port) == 0  # ...observing only, until a rescan lists it
    enforcer.rescan()
    assert late.cgroup_path in enforcer.containers and enforcer.targets == [f"/{enforcement.parent}"]
    assert connect_from(late, "127.8.8.8", targets.port) == EPERM
    # the programs look up a cgroup's own entries only where `monitored` says it has some
    assert own_bits(enforcer) == {a.cgroup_id, late.cgroup_id}
    enforcer.sync(policy(2, {"id": "all", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    assert own_bits(enforcer) == set()
    assert connect_from(a, "127.8.8.8", targets.port) == 0
    assert connect_from(b, "127.10.10.5", targets.port) == EPERM


def own_bits(enforcer) -> set[int]:
    """The cgroups whose `monitored` value says they have entries of their own."""
    return {CGROUP.unpack(k)[0] for k, v in batch.dump(enforcer.layout.map("monitored")) if v[0] & MON_OWN}


def test_an_earlier_allow_rule_shadows_a_wider_deny(enforcement, targets):
    """First match wins in the kernel as in the rule engine, though the trie is longest-match."""
    app = enforcement.container("app-a")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(
        policy(
            1,
            {"id": "allow-8", "priority": 10, "match": {"dest_ip": "127.8.8.0/24"}, "action": "allow"},
            {"id": "deny-lo", "priority": 20, "match": {"dest_ip": "127.0.0.0/8"}, "action": "deny"},
            {"id": "allow-5", "priority": 30, "match": {"dest_ip": "127.10.10.5/32"}, "action": "allow"},
        )
    )
    assert connect_from(app, "127.8.8.8", targets.port) == 0
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM  # its allow comes after the deny


def test_policy_changes_are_written_as_differences(enforcement, targets):
    app = enforcement.container("app-a")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(policy(1, {"id": "d", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM
    enforcer.sync(policy(2, {"id": "d", "match": {"dest_ip": "127.8.8.8/32"}, "action": "deny"}))
    assert connect_from(app, "127.10.10.5", targets.port) == 0
    assert connect_from(app, "127.8.8.8", targets.port) == EPERM
    kernel = {(e["map"], e.get("net")) for e in enforcer.describe_entries()}
    always = {("scan_every", None), ("flood_limits", None), ("pconfig", None)}  # array entries: always written
    assert kernel == {("rules4", "127.8.8.8/32")} | always
    assert enforcer.health()["policy_version"] == 2
    enforcer.sync(policy(3))
    assert connect_from(app, "127.8.8.8", targets.port) == 0
    assert bpftool.map_dump(enforcer.layout.map("rules4")) == []


def test_inexpressible_deny_is_reported_not_dropped(enforcement, targets):
    enforcement.container("app-a")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(
        policy(
            4,
            {"id": "gone", "match": {"container": "no-such-container"}, "action": "deny"},
            {"id": "wide", "match": {"dest_port": "1000-9000"}, "action": "deny"},
        )
    )
    notes = {n["rule_id"]: n["message"] for n in enforcer.health()["notes"]}
    assert "matches no monitored container" in notes["gone"]
    assert "wider than the kernel maps take" in notes["wide"]
    assert enforcer.health()["policy_version"] == 4


def test_a_policy_too_big_for_the_maps_is_refused_whole(enforcement, targets):
    app = enforcement.container("app-a")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(policy(1, {"id": "keep", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    huge = [  # 66 rules x 1000 ports, each on its own network: 66,000 entries for one trie
        {
            "id": f"r{i}",
            "match": {"dest_ip": f"127.{i}.0.0/16", "dest_port": f"{1 + i * 990}-{1000 + i * 990}"},
            "action": "deny",
        }
        for i in range(66)
    ]
    enforcer.sync(policy(2, *huge))
    assert "holds 65536" in enforcer.health()["error"] and "keeps policy 1" in enforcer.health()["error"]
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM  # the old policy still enforces


def test_map_full_from_the_kernel_is_a_clear_error(enforcement):
    tiny = f"{enforcement.pin_root}-tiny"
    bpftool.run(
        "map",
        "create",
        tiny,
        "type",
        "lpm_trie",
        "key",
        "8",
        "value",
        "4",
        "entries",
        "1",
        "name",
        "tiny",
        "flags",
        "1",
        json_output=False,
    )
    try:
        first = bpftool.update_command(tiny, "20 00 00 00 7f 00 00 01", "00 00 00 00")
        second = bpftool.update_command(tiny, "20 00 00 00 7f 00 00 02", "00 00 00 00")
        with pytest.raises(bpftool.MapFull, match="No space left"):
            bpftool.batch([first, second])
    finally:
        os.unlink(tiny)


def test_generations_swap_without_an_unenforced_moment(enforcement, targets, tmp_path):
    """An upgraded object is attached before the old one is detached, and the old is unpinned."""
    app = enforcement.container("app-a")
    enforcer = enforcement.enforcer
    enforcer.start()
    enforcer.sync(policy(1, {"id": "d", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    old_ids = set(enforcer.prog_ids.values())
    upgraded = tmp_path / "enforce_connect.bpf.o"
    upgraded.write_bytes(enforcer.obj.read_bytes() + b"\0")  # same programs, new hash: a new generation
    new = type(enforcer)(
        pin_root=enforcement.pin_root, scope=enforcer.scope, docker_roots=enforcer.docker_roots, obj=upgraded
    )
    new.start()
    new.sync(policy(1, {"id": "d", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    attached = {p["id"] for cg, p in new.attachments() if enforcement.parent in cg}
    assert attached == set(new.prog_ids.values()) and not attached & old_ids
    assert [g.root.name for g in new._generations()] == [new.layout.root.name]
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM


def test_never_attaches_at_the_cgroup_root(enforcement):
    enforcement.enforcer.start()
    with pytest.raises(Exception, match="refusing to attach at the cgroup root"):
        enforcement.enforcer._attach("/")


BAD_PROGRAM = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} m SEC(".maps");
SEC("cgroup/connect4")
int crossedge_bad(struct bpf_sock_addr *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&m, &k);
	return *v > 0; /* no NULL check: the verifier must refuse this */
}
"""


def test_a_verifier_rejection_is_an_error_with_the_verifier_log(kernel, tmp_path, cgroup_parent):
    source = tmp_path / "bad.bpf.c"
    source.write_text(BAD_PROGRAM)
    obj = tmp_path / "bad.bpf.o"
    bpfscripts = OBJECT.parent
    subprocess.run(
        [
            "clang",
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            f"-I{bpfscripts}",
            "-c",
            str(source),
            "-o",
            str(obj),
        ],
        check=True,
    )
    pins = f"/sys/fs/bpf/{cgroup_parent.removesuffix('.slice')}-bad"
    try:
        with pytest.raises(bpftool.VerifierRejected) as info:
            bpftool.loadall(str(obj), f"{pins}/progs", f"{pins}/maps")
        assert "invalid mem access" in info.value.detail or "map_value_or_null" in info.value.detail
    finally:
        shutil.rmtree(pins, ignore_errors=True)


FILL = """
import ipaddress, socket, sys
base = int(ipaddress.ip_address("127.64.0.0"))
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((str(ipaddress.ip_address(base + i)), 9))
    s.close()
"""


def test_flows_are_counted_in_the_kernel_and_idle_ones_pruned_when_the_table_fills(enforcement, targets, monkeypatch):
    app = enforcement.container("app-a")
    enforcer = enforcement.enforcer
    enforcer.scan_summary = MAX_LIMIT  # no scan summing: every new destination takes a flow
    enforcer.start()
    enforcer.sync(policy(1, {"id": "deny-5", "match": {"dest_ip": "127.10.10.5/32"}, "action": "deny"}))
    for _ in range(3):  # nobody reads the perf buffer: each call is counted with its flow
        assert connect_from(app, "127.8.8.8", targets.port) == 0
    assert connect_from(app, "127.10.10.5", targets.port) == EPERM
    flows = {key: folded for _raw, key, _window, folded in enforcer.flows()}
    assert flows[(app.cgroup_id, 0, targets.port, "127.8.8.8", "allow", "connect", 0)] == 3  # 0: no name
    assert flows[(app.cgroup_id, 1, targets.port, "127.10.10.5", "deny", "connect", 0)] == 1
    assert enforcer.lost() == 0
    assert enforcer.prune_flows(enforcer.flows()) == []  # far from half full: kept

    # Fill the kernel's flow table for real: one UDP connect() to each of MAX_FLOWS + 100
    # addresses (nobody reads the perf buffer, so every new flow takes an entry).
    filled = app.spawn([sys.executable, "-c", FILL, str(MAX_FLOWS + 100)], cwd=ROOT)
    assert filled.wait(120) == 0
    full = enforcer.flows()
    assert len(full) == MAX_FLOWS  # the table holds what it can...
    assert enforcer.lost() == 100 + 2  # ...the rest were neither sent nor counted, and say so
    monkeypatch.setattr("monitor.kernel.enforcer.PRUNE_IDLE_NS", 0)  # "idle for a minute": now
    assert len(enforcer.prune_flows(full)) == MAX_FLOWS  # past half full: the idle ones go
    assert enforcer.flows() == []
