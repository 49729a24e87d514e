"""Byte layouts of bpfscripts/enforce_connect.h, for writing map entries and reading events.

`struct` formats with "<" (little-endian, no padding) mirror the packed keys and the
naturally aligned value/event structs; tests/kernel/test_layout.py compares them with the
BTF of the built object, so a change on one side alone fails the build.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

RULE_ID_LEN = 64
MAX_SLOTS = 16384
MAX_ENTRIES = 65536
MAX_MONITORED = 65536
MON, MON_OWN = 1, 2  # `monitored` values: judged; with entries keyed by its own id (CE_MON, CE_MON_OWN)
MAX_FLOWS = 65536
ACTION_CODES = {"allow": 0, "alert": 1, "deny": 2}
ACTION_NAMES = {v: k for k, v in ACTION_CODES.items()}
VERDICT_NAMES = {0: "allow", 1: "deny", 2: "audit"}  # CE_V_*: what the program did with a call
# CE_OP_*: which call was judged (flood: a SYN flood report; packet: a raw, ping or SCTP socket's, at egress)
OP_NAMES = {0: "connect", 1: "sendmsg", 2: "flood", 3: "packet"}
LIFECYCLE_TYPES = {1: "new"}  # CE_LC_*
PROC_TYPES = {1: "exec", 2: "exit", 3: "open", 4: "refuse", 5: "socket"}  # CE_PROC_*
# CE_HOW_*: how an exec came about, which call a refusal refused, or that an open failed
HOWS = {1: "loader", 2: "io_uring_setup", 3: "clone_files", 4: "pidfd_getfd", 5: "clone_files_parent", 6: "as_given",
        7: "runtime", 8: "truncate", 9: "rename", 10: "unlink", 11: "link", 12: "chmod", 13: "chown",
        14: "compat", 15: "cgroups"}  # fmt: skip
MAX_NESTED = 1024  # CE_MAX_NESTED: cgroups inside one container that are judged
WRITE_CALLS = ("truncate", "rename", "unlink", "link", "chmod", "chown")  # refused by an immutable file (CE_PC_GUARD)
ACCESS_BITS = {"read": 1, "write": 2, "create": 4, "truncate": 8}  # CE_ACC_*: what an open asks for
PC_ON, PC_IDS, PC_LOADER, PC_IO_URING, PC_OPENS, PC_NS_HOLD, PC_GUARD = 1, 2, 4, 8, 16, 32, 64  # CE_PC_*
PRULES, FIELDS = 64, 5  # CE_PRULES, CE_FIELDS
PATH_LEN, ARGS_LEN, MATCH_LEN, DATA_LEN = 256, 256, 128, 1024
SCOPE_BITS = 64 + 16  # cgroup_id and port: always covered in full by a key's prefix

KEY4 = struct.Struct("<IQH4s")
KEY6 = struct.Struct("<IQH16s")
RULE = struct.Struct(f"<IIBB2x{RULE_ID_LEN}s")
EVENT_V1 = struct.Struct(f"<QQQIIIIIHBB16s16s{RULE_ID_LEN}sB3xI")  # before name_hash (recorded fixtures)
EVENT = struct.Struct(f"{EVENT_V1.format}Q")
FLOW_KEY = struct.Struct("<QIHBB16sB7xQ")
LIFECYCLE = struct.Struct("<QQQI4x")
FLOW = struct.Struct("<QQ")
HASH_KEY = struct.Struct("<QQQqI4x")  # dev, inode, size, ctime (s, ns): a file as the kernel saw it
HASH = struct.Struct("<Q")
PROC_HEAD = struct.Struct(f"<QQQQQIIIIIiIHHBBBBHBB{HASH_KEY.size}s16s16s")  # a ce_proc up to its data (sent as used)
PROC_KEY = struct.Struct("<QQIIiI")
PROC = struct.Struct(f"{PROC_HEAD.format}{DATA_LEN}s")
PAT_KEY = struct.Struct(f"<IB{MATCH_LEN - 1}s")  # packed: the field, then the path
PAT = struct.Struct("<QB7x")
ID_KEY = struct.Struct("<QQ")
ID = struct.Struct(f"<{FIELDS}Q")
PRULE = struct.Struct("<IBB3H")
PCONFIG = struct.Struct(f"<{FIELDS}Q{FIELDS}Q2Q4QQQ2QII{FIELDS}B3x{PRULE.size * 2 * PRULES}s")
PSCOPE = struct.Struct("<2Q")
FQDN_KEY = struct.Struct("<QQB7x")
FQDN_RULE = struct.Struct("<IIHBB")
FQDN_RULES_LEN = 8  # CE_FQDN_RULES
FQDN_RULES = struct.Struct(f"<I4x{FQDN_RULE.size * FQDN_RULES_LEN}s")
FQDN_KINDS = {"exact": 0, "wild": 1, "none": 2}  # CE_FQDN_*
FQDN_NOTHING = 255
ADDR_KEY = struct.Struct("<QB7x16s")
RESOLVED = struct.Struct(f"<QQ{FQDN_KEY.size}s")
DNS_HEAD = struct.Struct("<QQQHBBBB2x16s")  # a ce_dns up to its msg, which is sent as used
DNS_LEN = 1024
DNS = struct.Struct(f"{DNS_HEAD.format}{DNS_LEN}s")
DNS_FLAGS = {"cut": 1, "tcp": 2, "unmatched": 4, "untrusted": 8, "forged": 16}
RESOLVER_KEY = struct.Struct("<B3x16s")
SOCK_KEY = struct.Struct("<QII")
SOCK_KINDS = {"raw": 1, "packet": 2, "icmp": 3, "sctp": 4, "unix": 5}  # CE_SOCK_*
UNIX_KEY = struct.Struct("<QQ")
SOCK_NAMES = {v: k for k, v in SOCK_KINDS.items()}
DNS_ASKED_LEN = 16  # CE_DNS_ASKED
DNS_QUERY = struct.Struct("<Q16sHBB4x")
DNS_ASKED = struct.Struct(f"<II{DNS_QUERY.size * DNS_ASKED_LEN}s")
DNS_STATS = ("answers", "lost", "malformed", "unmatched", "forged", "queries")  # CE_DNS_STAT_*
TRAFFIC_KEY = struct.Struct("<QBBHH2x16s")
TRAFFIC = struct.Struct("<QQQQQQ")  # bytes in/out, payload in/out, packets in/out
SRC_KEY4 = struct.Struct("<I4s")
SRC_KEY6 = struct.Struct("<I16s")
BLOCK = struct.Struct("<QIBB2x")
SCAN_RULES_LEN = 4  # CE_SCAN_RULES
SCAN_RULE = struct.Struct(f"<IIQBB6x{RULE_ID_LEN}s")
SCAN_LIMITS = struct.Struct(f"<II{SCAN_RULE.size * SCAN_RULES_LEN}s")
SCAN = struct.Struct(f"<QQQQIIBBBBHH16sII16s{RULE.size}sIB7x512s")
LIMIT = struct.Struct(f"<QQQQIB3x{RULE.size}s4xQQQQQ")
SRC = struct.Struct("<B7x16s")
SYN_RATE = struct.Struct("<QIBB2x")
FLOODER = struct.Struct("<QIB3x")
COUNTER = struct.Struct("<Q")
SLOT = struct.Struct("<I")
CGROUP = struct.Struct("<Q")

STRUCTS = {"ce_key4": KEY4, "ce_key6": KEY6, "ce_rule": RULE, "ce_event": EVENT, "ce_flow_key": FLOW_KEY,
           "ce_flow": FLOW, "ce_lifecycle": LIFECYCLE, "ce_proc": PROC, "ce_pat_key": PAT_KEY, "ce_pat": PAT,
           "ce_id_key": ID_KEY, "ce_id": ID, "ce_prule": PRULE, "ce_pconfig": PCONFIG, "ce_pscope": PSCOPE,
           "ce_hash_key": HASH_KEY, "ce_hash": HASH,
           "ce_proc_key": PROC_KEY, "ce_fqdn_key": FQDN_KEY,
           "ce_fqdn_rule": FQDN_RULE, "ce_fqdn_rules": FQDN_RULES, "ce_addr_key": ADDR_KEY,
           "ce_resolved": RESOLVED, "ce_dns": DNS, "ce_resolver_key": RESOLVER_KEY,
           "ce_sock_key": SOCK_KEY, "ce_unix_key": UNIX_KEY, "ce_dns_query": DNS_QUERY,
           "ce_dns_asked": DNS_ASKED, "ce_traffic_key": TRAFFIC_KEY,
           "ce_traffic": TRAFFIC, "ce_src_key4": SRC_KEY4, "ce_src_key6": SRC_KEY6, "ce_block": BLOCK,
           "ce_scan_rule": SCAN_RULE, "ce_scan_limits": SCAN_LIMITS, "ce_scan": SCAN, "ce_src": SRC,
           "ce_syn_rate": SYN_RATE, "ce_flooder": FLOODER, "ce_limit": LIMIT}  # fmt: skip


def encode_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network, cgroup_id: int, port: int) -> bytes:
    """A trie key: (cgroup_id, port) matched exactly, then the network's prefix."""
    fmt = KEY4 if net.version == 4 else KEY6
    return fmt.pack(SCOPE_BITS + net.prefixlen, cgroup_id, socket.htons(port), net.network_address.packed)


def decode_key(data: bytes) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int, int]:
    fmt = KEY4 if len(data) == KEY4.size else KEY6
    prefixlen, cgroup_id, port, addr = fmt.unpack(data)
    net = ipaddress.ip_network((addr, prefixlen - SCOPE_BITS), strict=False)
    return net, cgroup_id, socket.ntohs(port)


@dataclass(frozen=True)
class KernelRule:
    """A trie entry's value: which rule decides, how it ranks, where it counts."""

    rank: int
    slot: int
    action: str
    audit: bool
    rule_id: str

    def encode(self) -> bytes:
        return RULE.pack(self.rank, self.slot, ACTION_CODES[self.action], int(self.audit), self.rule_id.encode())

    @classmethod
    def decode(cls, data: bytes) -> KernelRule:
        rank, slot, action, audit, rule_id = RULE.unpack(data)
        return cls(rank, slot, ACTION_NAMES.get(action, "allow"), bool(audit), _cstr(rule_id))


def _address(family: int, raw: bytes) -> str:
    if family not in (4, 6):
        raise ValueError(f"address family {family}")
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw))


def decode_event(data: bytes) -> dict:
    """One struct ce_event from the perf buffer, as the agent's event fields."""
    if len(data) < EVENT_V1.size:
        raise ValueError(f"kernel event is {len(data)} bytes, expected {EVENT.size}")
    ts_ns, cgroup_id, folded, pid, tid, uid, gid, slot, port, family, verdict, addr, comm, rule_id, op, scan = (
        EVENT_V1.unpack_from(data)
    )
    (name_hash,) = struct.unpack_from("<Q", data, EVENT_V1.size) if len(data) >= EVENT.size else (0,)
    if verdict not in VERDICT_NAMES:
        raise ValueError(f"kernel event has verdict {verdict}")
    if op not in OP_NAMES:
        raise ValueError(f"kernel event has op {op}")
    return {
        "mono_ns": ts_ns,
        "cgroup_id": cgroup_id,
        "folded": folded,
        "pid": pid,
        "tid": tid,
        "uid": uid,
        "gid": gid,
        "slot": slot,
        "dest_ip": _address(family, addr),
        "dest_port": socket.ntohs(port),
        "family": family,
        "kernel_verdict": VERDICT_NAMES[verdict],
        "op": OP_NAMES[op],
        "comm": _cstr(comm),
        "rule_id": _cstr(rule_id),
        "name_hash": name_hash,
        "scan": scan,
    }


def encode_source_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    """A blocklist trie key: the source network's prefix."""
    return (SRC_KEY4 if net.version == 4 else SRC_KEY6).pack(net.prefixlen, net.network_address.packed)


def encode_block(expires_ns: int, slot: int, action: str, audit: bool) -> bytes:
    return BLOCK.pack(expires_ns, slot, ACTION_CODES[action], int(audit))


def encode_scan_limits(summarise: int, rules: list[tuple[int, int, int, str, bool, str]]) -> bytes:
    """A scope's scan limits: the summing threshold, and up to SCAN_RULES_LEN rules as
    (threshold, slot, hold_ns, action, audit, rule_id)."""
    packed = b"".join(
        SCAN_RULE.pack(threshold, slot, hold_ns, ACTION_CODES[action], int(audit), rule_id.encode())
        for threshold, slot, hold_ns, action, audit, rule_id in rules
    )
    return SCAN_LIMITS.pack(summarise, len(rules), packed)


def encode_limit(egress: tuple[int, int, int, bool] | None, conn: tuple[int, int, int, bool, str] | None) -> bytes:
    """A container's `limits` entry as the agent writes it (the programs' state at 0):
    egress (rate, burst ns, slot, audit), connections (rate, burst ns, slot, audit, rule id)."""
    e_rate, e_burst, e_slot, e_audit = egress or (0, 0, 0, False)
    c_rate, c_burst, c_slot, c_audit, c_rule = conn or (0, 0, 0, False, "")
    rule = KernelRule(0, c_slot, "deny", c_audit, c_rule).encode()
    return LIMIT.pack(e_rate, e_burst, c_rate, c_burst, e_slot, int(e_audit), rule, 0, 0, 0, 0, 0)


def decode_limit(value: bytes) -> dict:
    """A `limits` entry: its rates, slots, and what the programs held back (cumulative)."""
    (e_rate, _e_burst, c_rate, _c_burst, e_slot, e_audit, rule, _evq, _cvq, held_bytes, held_packets,
     refused) = LIMIT.unpack(value)  # fmt: skip
    conn = KernelRule.decode(rule)
    return {"egress_rate": e_rate, "egress_slot": e_slot, "egress_audit": bool(e_audit), "conn_rate": c_rate,
            "conn_slot": conn.slot, "conn_audit": conn.audit, "held_bytes": held_bytes, "held_packets": held_packets,
            "refused": refused}  # fmt: skip


def decode_flooder(key: bytes, value: bytes) -> tuple[str, int, int, bool]:
    """A `flooders` entry: (source address, expiry ns on the monotonic clock, slot, audit)."""
    family, addr = SRC.unpack(key)
    expires_ns, slot, audit = FLOODER.unpack(value)
    return _address(family, addr), expires_ns, slot, bool(audit)


def decode_scan_limits(value: bytes) -> dict:
    """A scope's `scan_limits` entry, readable."""
    summarise, count, packed = SCAN_LIMITS.unpack(value)
    rules = []
    for i in range(min(count, SCAN_RULES_LEN)):
        threshold, slot, hold_ns, action, audit, rule_id = SCAN_RULE.unpack_from(packed, i * SCAN_RULE.size)
        rules.append({"rule_id": _cstr(rule_id), "threshold": threshold, "slot": slot, "hold_s": hold_ns / 1e9,
                      "action": ACTION_NAMES.get(action, "?"), "audit": bool(audit)})  # fmt: skip
    return {"summarise": summarise, "rules": rules}


def decode_scan(value: bytes) -> dict:
    """A container's `scans` entry: its cumulative summed calls and the current scan's shape."""
    (_window, blocked_ns, calls, denied, _fresh, pid, scanning, _over, _before, family, port_lo, port_hi, addr,
     deny_slot, uid, comm, _rule, gid, named, _seen) = SCAN.unpack(value)  # fmt: skip
    return {
        "blocked_ns": blocked_ns,
        "calls": calls,
        "denied": denied,
        "pid": pid,
        "scanning": bool(scanning),
        "family": family,
        "dest_ip": _address(family, addr) if family in (4, 6) else None,
        "port_lo": port_lo,
        "port_hi": port_hi,
        "deny_slot": deny_slot,
        "uid": uid,
        "gid": gid,
        "comm": _cstr(comm),
        "named": bool(named),
    }


def decode_traffic(key: bytes, value: bytes) -> tuple[tuple, tuple]:
    """A traffic table entry: ((cgroup_id, family, proto, local_port, remote_ip, remote_port),
    (bytes_in, bytes_out, payload_in, payload_out, packets_in, packets_out))."""
    cgroup_id, family, proto, local_port, remote_port, remote = TRAFFIC_KEY.unpack(key)
    return (cgroup_id, family, proto, local_port, _address(family, remote), remote_port), TRAFFIC.unpack(value)


def decode_dns(data: bytes) -> dict:
    """One struct ce_dns: a DNS response a monitored container received, or would have sent
    as a trusted resolver (its message as far as the program read it)."""
    if len(data) < DNS_HEAD.size:
        raise ValueError(f"dns record is {len(data)} bytes, expected at least {DNS_HEAD.size}")
    ts_ns, cgroup_id, name_hash, length, flags, written, pattern_kind, family, peer = DNS_HEAD.unpack_from(data)
    msg = data[DNS_HEAD.size : DNS_HEAD.size + length]
    if len(msg) != length:
        raise ValueError(f"dns record holds {len(msg)} bytes of message, says {length}")
    return {
        "mono_ns": ts_ns,
        "cgroup_id": cgroup_id,
        "name_hash": name_hash,
        "message": msg,
        **{flag: bool(flags & bit) for flag, bit in DNS_FLAGS.items()},
        "peer": _address(family, peer),
        "written": written,
        "matched": pattern_kind != FQDN_NOTHING,
    }


def encode_resolver(address: str) -> bytes:
    """A `dns_resolvers` key (ValueError for no IP address; ::ffff:a.b.c.d is a.b.c.d, as packets have it)."""
    ip = ipaddress.ip_address(address)
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return RESOLVER_KEY.pack(ip.version, ip.packed)


def encode_fqdn_key(cgroup_id: int, name_hash: int, kind: str) -> bytes:
    return FQDN_KEY.pack(cgroup_id, name_hash, FQDN_KINDS[kind])


def encode_fqdn_rules(rules: list[tuple[int, int, int, str, bool]]) -> bytes:
    """A name pattern's rules, in rank order: (rank, slot, port or 0, action, audit)."""
    if len(rules) > FQDN_RULES_LEN:
        raise ValueError(f"{len(rules)} rules for one name, the kernel holds {FQDN_RULES_LEN}")
    body = b"".join(
        FQDN_RULE.pack(rank, slot, socket.htons(port), ACTION_CODES[action], int(audit))
        for rank, slot, port, action, audit in rules
    )
    return FQDN_RULES.pack(len(rules), body)


def decode_fqdn_rules(data: bytes) -> list[tuple[int, int, int, str, bool]]:
    count, body = FQDN_RULES.unpack(data)
    found = []
    for i in range(min(count, FQDN_RULES_LEN)):
        rank, slot, port, action, audit = FQDN_RULE.unpack_from(body, i * FQDN_RULE.size)
        found.append((rank, slot, socket.ntohs(port), ACTION_NAMES.get(action, "allow"), bool(audit)))
    return found


def decode_lifecycle(data: bytes) -> dict:
    """One struct ce_lifecycle: a container cgroup the kernel classified."""
    if len(data) < LIFECYCLE.size:
        raise ValueError(f"lifecycle record is {len(data)} bytes, expected {LIFECYCLE.size}")
    ts_ns, cgroup_id, parent_id, kind = LIFECYCLE.unpack_from(data)
    if kind not in LIFECYCLE_TYPES:
        raise ValueError(f"lifecycle record has type {kind}")
    return {"type": LIFECYCLE_TYPES[kind], "mono_ns": ts_ns, "cgroup_id": cgroup_id, "parent_id": parent_id}


def decode_proc(data: bytes) -> dict:
    """One struct ce_proc: a process exec'd or exited in a monitored cgroup, an open, or a
    refused call (sent with only the part of `data` it uses: the path as resolved, its NUL
    included, then argv, then the name as given)."""
    if len(data) < PROC_HEAD.size:
        raise ValueError(f"process record is {len(data)} bytes, expected at least {PROC_HEAD.size}")
    (ts_ns, cgroup_id, start_ns, lifetime_ns, folded, kind, pid, ppid, uid, gid, exit_code, slot, path_len, args_len,
     verdict, cut, access, held, given_len, fileless, how, file, comm, pcomm) = PROC_HEAD.unpack_from(data)  # fmt: skip
    if kind not in PROC_TYPES:
        raise ValueError(f"process record has type {kind}")
    if verdict not in VERDICT_NAMES:
        raise ValueError(f"process record has verdict {verdict}")
    if how and how not in (SOCK_NAMES if kind == 5 else HOWS):
        raise ValueError(f"process record has how {how}")
    body = data[PROC_HEAD.size :]
    if len(body) < path_len + args_len + given_len:
        raise ValueError(f"process record holds {len(body)} bytes of path, argv and name, says "
                         f"{path_len + args_len + given_len}")  # fmt: skip
    argv = [a.decode(errors="replace") for a in body[path_len : path_len + args_len].split(b"\0")]
    record = {
        "event": PROC_TYPES[kind],
        "mono_ns": ts_ns,
        "cgroup_id": cgroup_id,
        "start_ns": start_ns,
        "pid": pid,
        "tid": pid,
        "ppid": ppid,
        "uid": uid,
        "gid": gid,
        "comm": _cstr(comm),
        "parent_comm": _cstr(pcomm),
        "cut": bool(cut),
        "slot": slot,
        "kernel_verdict": VERDICT_NAMES[verdict],
        "rule_id": "",
        "folded": folded,
        "fileless": bool(fileless),
        "how": HOWS.get(how, "") if kind != 5 else "",
        "given": _cstr(body[path_len + args_len : path_len + args_len + given_len]),
    }
    if kind == 3:  # an open: the file's path, what it asked for, what it got (the agent adds the opener)
        path = body[:path_len]
        at = {"dirfd": struct.unpack("<q", struct.pack("<Q", lifetime_ns))[0]} if HOWS.get(how) in WRITE_CALLS else {}
        return record | at | {"path": _cstr(path), "access": access_names(access), "result": exit_code,
                              "group": proc_group(cgroup_id, kind, access, exit_code, path)}  # fmt: skip
    if kind == 4:  # a refused call: which one is in `how`
        return record | {"binary": "", "args": [], "group": proc_group(cgroup_id, kind, ppid, how, comm)}
    if kind == 5:  # a socket made (or a unix one connected to): its kind in `how`, its family etc. in lifetime_ns
        group = (cgroup_id, (fnv1a(comm) + how) & (2**64 - 1), ppid, kind, exit_code)
        return record | {"binary": "", "args": [], "socket": SOCK_NAMES[how], "result": exit_code,
                         "unix_path": _cstr(body[:path_len]),
                         "family": lifetime_ns >> 32, "type": (lifetime_ns >> 16) & 0xFFFF,
                         "protocol": lifetime_ns & 0xFFFF, "group": group}  # fmt: skip
    return (
        record
        | {
            "binary": _cstr(body[:path_len]),
            "held": bool(held),  # stopped until the agent has listed its new container...
            "listing": bool(held & 1),
            "files_due": bool(held & 2),  # ...or looked up the rules' files through this process...
            "hash_due": bool(held & 4),  # ...or hashed the file (a content hash rule decides it)
            "file": HASH_KEY.unpack(file),  # the file that ran, as exec_hashes keys it
            "args": argv[:-1] if argv and argv[-1] == "" else argv,
            "exit_code": exit_code if kind == 2 else None,
            "loader_fd": exit_code if HOWS.get(how) == "loader" else None,  # the descriptor of the loader's program
            "lifetime_ns": lifetime_ns if kind == 2 else None,
            "group": proc_group(cgroup_id, kind, ppid, exit_code, body[:path_len] if kind == 1 else comm),
        }
    )


def proc_group(cgroup_id: int, kind: int, ppid: int, exit_code: int, named: bytes) -> tuple:
    """The ce_proc_key the program counted a record under: an exit's status is in its key,
    an exec's is not; an open's key holds its access bits (as ppid) and its -errno (every
    success is one)."""
    if kind == 3:
        return cgroup_id, fnv1a(named), ppid, kind, min(exit_code, 0)
    return cgroup_id, fnv1a(named), ppid, kind, exit_code if kind == 2 else 0


def access_names(bits: int) -> list[str]:
    return [name for name, bit in ACCESS_BITS.items() if bits & bit]


def access_bits(names) -> int:
    return sum(ACCESS_BITS[name] for name in set(names))


def decode_proc_key(raw: bytes) -> tuple:
    cgroup_id, digest, ppid, kind, exit_code, _pad = PROC_KEY.unpack(raw)
    return cgroup_id, digest, ppid, kind, exit_code


def fnv1a(data: bytes) -> int:
    """64-bit FNV-1a, as process.bpf.h computes it."""
    h = 14695981039346656037
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def encode_pat_key(field: int, raw: bytes) -> bytes:
    """A pattern trie key: the field in full, then the bytes (an exact path with its NUL)."""
    if len(raw) > MATCH_LEN - 1:
        raise ValueError(f"pattern longer than {MATCH_LEN - 1} bytes")
    return PAT_KEY.pack(8 + 8 * len(raw), field, raw)


def decode_pat_key(data: bytes) -> tuple[int, bytes]:
    """(field, the key's bytes) of a pattern trie key."""
    prefixlen, field, raw = PAT_KEY.unpack(data)
    return field, raw[: (prefixlen - 8) // 8]


def encode_pconfig(config: dict) -> bytes:
    """pconfig's entry from the compiler's dict (monitor/kernel/compile.py: _path_entries)."""
    empty = (0, 0, 0, (0, 0, 0))
    rules = b"".join(
        PRULE.pack(slot, action, audit, *lens)
        for kind in (0, 1)
        for slot, action, audit, lens in (config["rules"][kind].get(bit, empty) for bit in range(PRULES))
    )
    c = config
    return PCONFIG.pack(*c["def_fwd"], *c["def_rev"], *c["every"], *c["access"], c["fileless"], c["sha"],
                        *c["denies"], c["flags"], c["host_mnt_ns"], *c["suffix_len"], rules)  # fmt: skip


def decode_pconfig(data: bytes) -> dict:
    values = PCONFIG.unpack(data)
    f = FIELDS
    rules = values[-1]
    config = {"def_fwd": values[0:f], "def_rev": values[f : 2 * f], "every": values[2 * f : 2 * f + 2],
              "access": values[2 * f + 2 : 2 * f + 6], "fileless": values[2 * f + 6], "sha": values[2 * f + 7],
              "denies": values[2 * f + 8 : 2 * f + 10], "flags": values[2 * f + 10], "host_mnt_ns": values[2 * f + 11],
              "suffix_len": values[2 * f + 12 : 3 * f + 12], "rules": [{}, {}]}  # fmt: skip
    for i, (slot, action, audit, *lens) in enumerate(PRULE.iter_unpack(rules)):
        if slot or action or audit or any(lens):
            config["rules"][i // PRULES][i % PRULES] = (
                slot,
                ACTION_NAMES.get(action, "allow"),
                bool(audit),
                tuple(lens),
            )
    return config


def decode_flow(key: bytes, value: bytes) -> tuple[tuple, int, int]:
    """A `flows` entry: (flow key as in flow_of(event), last window start ns, folded calls)."""
    cgroup_id, slot, port, family, verdict, addr, op, name_hash = FLOW_KEY.unpack(key)
    window_ns, folded = FLOW.unpack(value)
    return (
        (
            cgroup_id,
            slot,
            socket.ntohs(port),
            _address(family, addr),
            VERDICT_NAMES.get(verdict, "?"),
            OP_NAMES.get(op, "?"),
            name_hash,
        ),  # fmt: skip
        window_ns,
        folded,
    )


def flow_of(event: dict) -> tuple:
    """The `flows` key of a decoded kernel event."""
    e = event
    return e["cgroup_id"], e["slot"], e["dest_port"], e["dest_ip"], e["kernel_verdict"], e["op"], e.get("name_hash", 0)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def hex_bytes(data: bytes) -> str:
    """bpftool's `hex` argument form."""
    return " ".join(f"{b:02x}" for b in data)


def from_json_bytes(items) -> bytes:
    """bpftool -j prints bytes as "0x1f" strings (map dump) or integers."""
    return bytes(int(b, 16) if isinstance(b, str) else int(b) for b in items)
