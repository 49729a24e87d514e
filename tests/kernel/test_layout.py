"""monitor/kernel/layout.py mirrors the structs of enforce_connect.h: checked against the
BTF that clang wrote into the built object, so one side cannot change alone. (ce_event and
ce_lifecycle have no BTF, being only stack variables; tests/unit/test_perf_lines.py decodes
recorded real ones field by field.)"""

import re
import struct

import pytest

from monitor.kernel import bpftool, layout
from monitor.kernel.enforcer import OBJECT

pytestmark = pytest.mark.kernel
MEMBERS = {
    "ce_key4": ["prefixlen", "cgroup_id", "port", "addr"],
    "ce_key6": ["prefixlen", "cgroup_id", "port", "addr"],
    "ce_rule": ["rank", "slot", "action", "audit", "pad", "rule_id"],
    "ce_flow_key": ["cgroup_id", "slot", "port", "family", "verdict", "addr", "op", "pad", "name_hash"],
    "ce_flow": ["window_ns", "folded"],
    "ce_pat_key": ["prefixlen", "field", "path"],
    "ce_pat": ["mask", "watch", "pad"],
    "ce_id_key": ["dev", "ino"],
    "ce_id": ["mask"],
    "ce_prule": ["slot", "action", "audit", "min_len"],
    "ce_pconfig": [
        "def_fwd",
        "def_rev",
        "every",
        "access",
        "fileless",
        "sha",
        "denies",
        "flags",
        "host_mnt_ns",
        "suffix_len",
        "pad",
        "rules",
    ],
    "ce_pscope": ["mask"],
    "ce_hash_key": ["dev", "ino", "size", "ctime_sec", "ctime_nsec", "pad"],
    "ce_hash": ["mask"],
    "ce_proc_key": ["cgroup_id", "hash", "ppid", "type", "exit_code", "pad"],
    "ce_fqdn_key": ["cgroup_id", "hash", "kind", "pad"],
    "ce_fqdn_rule": ["rank", "slot", "port", "action", "audit"],
    "ce_fqdn_rules": ["count", "pad", "rules"],
    "ce_addr_key": ["cgroup_id", "family", "pad", "addr"],
    "ce_resolved": ["expires_ns", "name_hash", "pattern"],
    "ce_src_key4": ["prefixlen", "addr"],
    "ce_src_key6": ["prefixlen", "addr"],
    "ce_block": ["expires_ns", "slot", "action", "audit", "pad"],
    "ce_traffic_key": ["cgroup_id", "family", "proto", "local_port", "remote_port", "pad", "remote"],
    "ce_scan": [
        "window_ns",
        "blocked_ns",
        "calls",
        "denied",
        "fresh",
        "pid",
        "scanning",
        "over",
        "over_before",
        "family",
        "port_lo",
        "port_hi",
        "addr",
        "deny_slot",
        "uid",
        "comm",
        "rule",
        "gid",
        "named",
        "pad",
        "seen",
    ],
    "ce_traffic": ["bytes_in", "bytes_out", "payload_in", "payload_out", "packets_in", "packets_out"],
    "ce_dns": [
        "ts_ns",
        "cgroup_id",
        "name_hash",
        "len",
        "flags",
        "written",
        "pattern_kind",
        "family",
        "pad",
        "peer",
        "msg",
    ],
    "ce_resolver_key": ["family", "pad", "addr"],
    "ce_sock_key": ["cgroup_id", "kind", "pad"],
    "ce_dns_query": ["name_hash", "addr", "id", "family", "used", "pad"],
    "ce_dns_asked": ["next", "tcp_next", "q"],
    "ce_proc": [
        "ts_ns",
        "cgroup_id",
        "start_ns",
        "lifetime_ns",
        "folded",
        "type",
        "pid",
        "ppid",
        "uid",
        "gid",
        "exit_code",
        "slot",
        "path_len",
        "args_len",
        "verdict",
        "cut",
        "access",
        "held",
        "given_len",
        "fileless",
        "how",
        "file",
        "comm",
        "pcomm",
        "data",
    ],  # fmt: skip
}


def offsets(fmt: struct.Struct) -> list[int]:
    tokens = re.findall(r"\d*[a-zA-Z]", fmt.format.lstrip("<"))
    return [struct.calcsize("<" + "".join(tokens[:i])) for i in range(len(tokens))]


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_python_layout_matches_the_objects_btf(kernel, name):
    types = {t.get("name"): t for t in bpftool.run("btf", "dump", "file", str(OBJECT))["types"]}
    btf = types[name]
    assert btf["size"] == layout.STRUCTS[name].size
    assert [m["name"] for m in btf["members"]] == MEMBERS[name]
    found = offsets(layout.STRUCTS[name])
    assert [m["bits_offset"] // 8 for m in btf["members"]] == found[: len(MEMBERS[name])]
    assert len(found) - len(MEMBERS[name]) <= 1  # at most the struct's tail padding is not a member
