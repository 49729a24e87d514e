"""Rule set -> the entries of the kernel's policy tries.

The program does four longest-prefix lookups per connect: (this cgroup | every container)
x (this port | any port), and the hit with the lowest rank decides. Longest match is not
first match, so within each (family, cgroup, port) bucket every entry carries the
best-ranked rule among all entries whose prefix contains it ("flattening"); then the
longest hit of a bucket is that bucket's first match, and the best of the four buckets is
the rule set's first match.

Scopes are resolved here, on the node: a rule naming containers (by name, path glob or
cgroup id) becomes entries for each matching cgroup id under the monitored containers. A
deny the maps cannot express (no such container on this node, a port range too wide) is
returned as a note, never silently dropped.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from collections import defaultdict
from dataclasses import dataclass, field

from ..dns import NONE, Pattern
from ..files import WRITES, Watch
from ..rules import ACCESSES, GLOB_CHARS, Rule, RuleSet, unix_spellings
from . import patterns as kernel_patterns
from .layout import (
    ACTION_CODES,
    CGROUP,
    FIELDS,
    FQDN_RULES_LEN,
    HASH,
    HASH_KEY,
    ID,
    ID_KEY,
    MAX_SLOTS,
    PAT,
    PC_GUARD,
    PC_IDS,
    PC_IO_URING,
    PC_LOADER,
    PC_NS_HOLD,
    PC_ON,
    PC_OPENS,
    PSCOPE,
    SCAN_RULES_LEN,
    SLOT,
    SOCK_KEY,
    SOCK_KINDS,
    UNIX_KEY,
    KernelRule,
    access_bits,
    encode_block,
    encode_fqdn_key,
    encode_fqdn_rules,
    encode_key,
    encode_limit,
    encode_pat_key,
    encode_pconfig,
    encode_scan_limits,
    encode_source_key,
    fnv1a,
)

ANY_V4 = ipaddress.ip_network("0.0.0.0/0")
ANY_V6 = ipaddress.ip_network("::/0")
MAX_PORTS_PER_RULE = 1024
MAPS = {4: "rules4", 6: "rules6"}
FWD_MAP = "pat_fwd"  # exec and open rules' prefixes and exact paths (path.bpf.h)
REV_MAP = "pat_rev"  # ...their suffixes, reversed
IDS_MAP = "pat_ids"  # ...their exact paths' files by identity, per container
CONFIG_MAP = "pconfig"  # ...and the rest: one array entry
PSCOPE_MAP = "pscope"  # containers -> the rules naming containers that apply to them
HASHES_MAP = "exec_hashes"  # files the agent hashed -> the content hash rules they match
FQDN_MAP = "fqdn_rules"  # name patterns -> their rules (dns.bpf.h)
UNNAMED_MAP = "fqdn_unnamed"  # every container's rules for addresses never resolved: one array entry
BLOCK_MAPS = {4: "block4", 6: "block6"}  # source networks -> their rule (xdp.bpf.h)
SCAN_MAP = "scan_limits"  # containers -> the summing threshold and their scan rules (scan.bpf.h)
SCAN_EVERY_MAP = "scan_every"  # ...and every container's: one array entry
FLOOD_MAP = "flood_limits"  # the SYN flood rules (xdp.bpf.h): one array entry
LIMIT_MAP = "limits"  # containers -> their egress and connection rates (limits.bpf.h)
SOCK_MAP = "sock_rules"  # (container | every container, kind of socket) -> its rule (sock.bpf.h)
UNIX_MAP = "unix_rules"  # (container | every container, unix socket path) -> its rule (unix_connect.bpf.c)
POLICY_MAPS = (*MAPS.values(), FWD_MAP, REV_MAP, IDS_MAP, CONFIG_MAP, PSCOPE_MAP, HASHES_MAP, FQDN_MAP, UNNAMED_MAP,
               *BLOCK_MAPS.values(), SCAN_MAP, SCAN_EVERY_MAP, FLOOD_MAP, LIMIT_MAP, SOCK_MAP,
               UNIX_MAP)  # fmt: skip
MIN_BURST_NS = 100_000_000  # a rate limit lets this much time's worth through at once, at least...
MIN_BURST_BYTES = 128 << 10  # ...and for egress at least this (two 64 KiB GSO packets)
SUMMARISE = 200  # new destinations per second per container from which the kernel sums calls (a scan)


@dataclass(frozen=True)
class Scope:
    """A monitored cgroup as the rules see it."""

    cgroup_id: int
    path: str
    container: str | None


@dataclass
class Compiled:
    entries: dict[str, dict[bytes, bytes]] = field(default_factory=lambda: {m: {} for m in POLICY_MAPS})
    slots: dict[str, int] = field(default_factory=dict)  # rule id -> counter slot
    notes: list[dict] = field(default_factory=list)  # {"rule_id", "message"}
    patterns: dict[int, frozenset[Pattern]] = field(default_factory=dict)  # cgroup (0: all) -> name patterns
    next_expiry: dt.datetime | None = None  # the first ingress rule to expire: the entries change then
    own: set[int] = field(default_factory=set)  # cgroups with entries keyed by their own id (`monitored`: MON_OWN)
    kernel_rules: set[str] = field(default_factory=set)  # exec and open rules the kernel judges (by id)
    guard: set[tuple[int, str]] = field(default_factory=set)  # (cgroup, path) to make immutable (monitor.guard)
    open_denies: bool = False  # some open rule denies in the kernel (then 32-bit calls are refused)
    packet_rules: bool = False  # some rule names packet sockets (then socket() itself is watched)
    packet_denies: bool = False  # ...and one denies them (then 32-bit calls are refused where it applies)

    def note(self, rule: Rule, message: str) -> None:
        self.notes.append({"rule_id": rule.id, "message": message})


def compile_rules(
    ruleset: RuleSet,
    scopes: list[Scope],
    slots: dict[str, int] | None = None,
    watches: tuple[Watch, ...] = (),
    summarise: int = SUMMARISE,
    identities: dict[tuple[int, str], tuple[int, int]] | None = None,
    io_uring: bool = True,
    host_mnt_ns: int = 0,
    hashes: dict[tuple, str] | None = None,
) -> Compiled:
    """`slots` is the previous rule id -> slot assignment, kept so counters stay with their
    rule; `watches` the node's file watches (monitor.files); `summarise` the new destinations
    per second from which a container's calls are summed in the kernel (scan.bpf.h);
    `identities` (cgroup, path) -> (dev, inode) of the exact paths the rules name, as found in
    each container (the kernel's dev_t encoding); `io_uring` False lets io_uring_setup() be
    where an open deny applies; `host_mnt_ns` the host's mount namespace, whose processes in
    a container's cgroup (the runtime's) are not judged; `hashes` the files the agent hashed
    (layout.HASH_KEY's fields -> SHA-256 hex)."""
    out = Compiled()
    out.slots = _assign_slots([r.id for r in ruleset.rules], slots or {})
    # bucket (family, cgroup_id, port) -> {network: (rank, rule)}
    buckets: dict[tuple[int, int, int], dict] = defaultdict(dict)
    for rank, rule in enumerate(ruleset.rules, start=1):
        if rule.kind != "connect" or rule.dest_fqdn is not None:
            continue
        cgroup_ids = _cgroup_ids(rule, scopes, out)
        ports = _ports(rule, out)
        if cgroup_ids is None or ports is None:
            continue
        nets = [rule.dest_net] if rule.dest_net is not None else [ANY_V4, ANY_V6]
        for cgid in cgroup_ids:
            for port in ports:
                for net in nets:
                    bucket = buckets[(net.version, cgid, port)]
                    if net not in bucket or bucket[net][0] > rank:
                        bucket[net] = (rank, rule)
    for (family, cgid, port), bucket in buckets.items():
        if cgid:
            out.own.add(cgid)
        target = out.entries[MAPS[family]]
        for net, (rank, rule) in _flatten(bucket).items():
            value = KernelRule(rank, out.slots.get(rule.id, 0), rule.action, rule.audit, rule.id)
            target[encode_key(net, cgid, port)] = value.encode()
    _path_entries(ruleset, scopes, watches, identities or {}, io_uring, host_mnt_ns, out)
    _hash_entries(ruleset, hashes or {}, out)
    _fqdn_entries(ruleset, scopes, out)
    _block_entries(ruleset, out)
    _scan_entries(ruleset, scopes, summarise, out)
    _flood_entry(ruleset, out)
    _limit_entries(ruleset, scopes, out)
    _sock_entries(ruleset, scopes, out)
    return out


def _sock_entries(ruleset: RuleSet, scopes: list[Scope], out: Compiled) -> None:
    """Socket rules into `sock_rules`, and unix socket rules into `unix_rules` (each of the
    path's spellings, unix_spellings): per scope and kind of socket (path), the best-ranked
    rule (the programs compare a container's own with every container's by rank)."""
    for rank, rule in enumerate(ruleset.rules, start=1):
        if rule.kind == "unix":
            for cgid in _cgroup_ids(rule, scopes, out) or []:
                for path in unix_spellings(rule.unix_path):
                    key = UNIX_KEY.pack(cgid, fnv1a(path.encode()))
                    if key not in out.entries[UNIX_MAP]:
                        value = KernelRule(rank, out.slots.get(rule.id, 0), rule.action, rule.audit, rule.id)
                        out.entries[UNIX_MAP][key] = value.encode()
                        if cgid:
                            out.own.add(cgid)
        if rule.kind != "socket":
            continue
        out.packet_rules |= "packet" in rule.socket
        out.packet_denies |= "packet" in rule.socket and rule.action == "deny" and not rule.audit
        for cgid in _cgroup_ids(rule, scopes, out) or []:
            for kind in rule.socket:
                key = SOCK_KEY.pack(cgid, SOCK_KINDS[kind], 0)
                if key not in out.entries[SOCK_MAP]:  # rank order: the first is the best
                    value = KernelRule(rank, out.slots.get(rule.id, 0), rule.action, rule.audit, rule.id)
                    out.entries[SOCK_MAP][key] = value.encode()
                    if cgid:
                        out.own.add(cgid)


def _limit_entries(ruleset: RuleSet, scopes: list[Scope], out: Compiled) -> None:
    """Rate limits into `limits`: per container (a rule for every container applies to each
    one on its own), the best-ranked egress rule and connection rule that apply. An entry
    written again starts its queues afresh, so an unchanged rule's entry is never rewritten."""
    chosen: dict[int, dict[str, Rule]] = defaultdict(dict)
    for rule in ruleset.rules:
        if rule.kind != "limit":
            continue
        cgids = [s.cgroup_id for s in scopes] if not rule.scoped else _cgroup_ids(rule, scopes, out) or []
        for cgid in cgids:
            chosen[cgid].setdefault(rule.limit[0], rule)
    for cgid, rules in chosen.items():
        egress = conn = None
        if rule := rules.get("egress_bytes_per_s"):
            rate = rule.limit[1]
            burst = max(MIN_BURST_NS, MIN_BURST_BYTES * 10**9 // rate)
            egress = (rate, burst, out.slots.get(rule.id, 0), rule.audit)
        if rule := rules.get("connections_per_s"):
            rate = rule.limit[1]
            conn = (rate, max(MIN_BURST_NS, 10**9 // rate), out.slots.get(rule.id, 0), rule.audit, rule.id)
        out.entries[LIMIT_MAP][CGROUP.pack(cgid)] = encode_limit(egress, conn)
        out.own.add(cgid)


def _flood_entry(ruleset: RuleSet, out: Compiled) -> None:
    """The SYN flood rules, in rank order, into `flood_limits` (an array entry: always written;
    no rule means the XDP program counts no SYN)."""
    rules = [rule for rule in ruleset.rules if rule.kind == "flood"]
    out.entries[FLOOD_MAP][SLOT.pack(0)] = encode_scan_limits(0, _thresholds(rules, "SYN flood rules", out))


def _scan_entries(ruleset: RuleSet, scopes: list[Scope], summarise: int, out: Compiled) -> None:
    """Scan rules: every container's entry in `scan_every` (always written: it carries the
    summing threshold), and one per container that rules name in `scan_limits`, with every
    container's rules in it too (the program reads one entry). Each rule fires on its own
    threshold, so the order is rank order only for the CE_SCAN_RULES kept."""
    by_scope: dict[int, list[tuple[int, Rule]]] = defaultdict(list)
    for rank, rule in enumerate(ruleset.rules):
        if rule.kind == "scan":
            for cgid in _cgroup_ids(rule, scopes, out) or []:
                by_scope[cgid].append((rank, rule))
    common = by_scope.get(0, [])
    for cgid in {0, *by_scope}:
        rules = [rule for _rank, rule in sorted(by_scope[cgid] + (common if cgid else []), key=lambda hit: hit[0])]
        packed = _thresholds(rules, "scan rules apply to a container", out)
        if cgid:
            out.entries[SCAN_MAP][CGROUP.pack(cgid)] = encode_scan_limits(summarise, packed)
            out.own.add(cgid)
        else:
            out.entries[SCAN_EVERY_MAP][SLOT.pack(0)] = encode_scan_limits(summarise, packed)


def _thresholds(rules: list[Rule], what: str, out: Compiled) -> list[tuple]:
    """The first SCAN_RULES_LEN threshold rules as encode_scan_limits takes them; the rest noted."""
    for rule in rules[SCAN_RULES_LEN:]:
        out.note(rule, f"more than {SCAN_RULES_LEN} {what}: not judged")
    return [(r.limit[1], out.slots.get(r.id, 0), (r.hold or 0) * 10**9, r.action, r.audit, r.id)
            for r in rules[:SCAN_RULES_LEN]]  # fmt: skip


def _block_entries(ruleset: RuleSet, out: Compiled) -> None:
    """Ingress rules into the blocklist tries, flattened like the connect tries; an entry
    carries its rule's expiry (on the monotonic clock the program reads), and a rule
    already past it is left out."""
    now, mono = dt.datetime.now(dt.UTC), time.monotonic_ns()
    buckets: dict[int, dict] = defaultdict(dict)
    for rank, rule in enumerate(ruleset.rules, start=1):
        if rule.kind != "ingress" or (rule.expires is not None and rule.expires <= now):
            continue
        bucket = buckets[rule.source_net.version]
        if rule.source_net not in bucket or bucket[rule.source_net][0] > rank:
            bucket[rule.source_net] = (rank, rule)
        if rule.expires is not None and (out.next_expiry is None or rule.expires < out.next_expiry):
            out.next_expiry = rule.expires
    for family, bucket in buckets.items():
        for net, (_rank, rule) in _flatten(bucket).items():
            # whole milliseconds: the same rule gives the same value at the next sync (no rewrite)
            expires = (
                0 if rule.expires is None else round((mono + (rule.expires - now).total_seconds() * 1e9) / 1e6) * 10**6
            )
            value = encode_block(expires, out.slots.get(rule.id, 0), rule.action, rule.audit)
            out.entries[BLOCK_MAPS[family]][encode_source_key(net)] = value


def _fqdn_entries(ruleset: RuleSet, scopes: list[Scope], out: Compiled) -> None:
    """Rules by name into `fqdn_rules`: per scope and name pattern, every rule that applies
    to the names the pattern matches, in rank order, up to the first that takes any port.
    The kernel picks a name's most specific pattern when the answer arrives, so a pattern's
    list includes the rules of the wildcards that cover it ("*.example.com" in the list of
    "api.example.com"), and a container's patterns include every container's. Every
    container's rules for addresses never resolved go to `fqdn_unnamed` (always written)."""
    out.entries[UNNAMED_MAP][SLOT.pack(0)] = encode_fqdn_rules([])
    by_scope: dict[int, dict[Pattern, list]] = defaultdict(lambda: defaultdict(list))
    for rank, rule in enumerate(ruleset.rules, start=1):
        if rule.kind != "connect" or rule.dest_fqdn is None:
            continue
        port = rule.port_range[0] if rule.port_range and rule.port_range != (1, 65535) else 0
        for cgid in _cgroup_ids(rule, scopes, out) or []:
            by_scope[cgid][rule.dest_fqdn].append((rank, port, rule))
    common = by_scope.get(0, {})
    out.patterns = {cgid: frozenset(own) | frozenset(common) for cgid, own in by_scope.items()}
    out.own.update(cgid for cgid in out.patterns if cgid)
    for cgid, patterns in out.patterns.items():
        sources = [by_scope[cgid]] + ([common] if cgid else [])
        for pattern in patterns:
            hits = sorted(
                (hit for outer in patterns if outer.covers(pattern) for src in sources for hit in src.get(outer, ())),
                key=lambda hit: hit[0],
            )
            flat = []
            for rank, port, rule in hits:
                flat.append((rank, out.slots.get(rule.id, 0), port, rule.action, rule.audit))
                if port == 0:
                    break  # first match: nothing after an any-port rule is reached
            for rank, _slot, _port, action, audit in flat[FQDN_RULES_LEN:]:
                rule = ruleset.rules[rank - 1]
                if action == "deny" and not audit:
                    out.note(rule, f"more than {FQDN_RULES_LEN} rules apply to {pattern}: judged by the agent only")
            value = encode_fqdn_rules(flat[:FQDN_RULES_LEN])
            if cgid == 0 and pattern.kind == NONE:
                out.entries[UNNAMED_MAP][SLOT.pack(0)] = value
            else:
                out.entries[FQDN_MAP][encode_fqdn_key(cgid, pattern.hash, pattern.kind)] = value


def watch_pattern(glob: str) -> tuple[str, bool]:
    """The trie entry that lets every path a glob can match through: the glob's literal
    part before its first wildcard, as a prefix (cut to what the key holds)."""
    exact = not GLOB_CHARS & set(glob)
    literal = glob if exact else glob[: min(glob.index(c) for c in GLOB_CHARS if c in glob)]
    raw = literal.encode()
    if len(raw) + 1 > kernel_patterns.PATH_BYTES:
        return raw[: kernel_patterns.PATH_BYTES].decode(errors="ignore"), False
    return literal, exact


def _path_entries(
    ruleset: RuleSet,
    scopes: list[Scope],
    watches: tuple[Watch, ...],
    identities: dict[tuple[int, str], tuple[int, int]],
    io_uring: bool,
    host_mnt_ns: int,
    out: Compiled,
) -> None:
    """Exec and open rules into the pattern maps (path.bpf.h). Each rule the kernel can judge
    gets a bit in rank order per kind; a rule needing the agent (a glob other than a path,
    prefix or suffix) gets none, and a deny such a rule is enforces nothing (said in a note;
    the dashboard refuses to save one). The agent's open rules and the node's watches make
    their glob's literal prefix reported. A kernel rule is judged in the kernel even below a
    rule needing the agent: where both match, the kernel's decides (a note says so)."""
    config = {"def_fwd": [0] * FIELDS, "def_rev": [0] * FIELDS, "every": [0, 0], "access": [0] * len(ACCESSES),
              "fileless": 0, "sha": 0, "denies": [0, 0], "flags": PC_ON | (PC_IO_URING if io_uring else 0),
              "host_mnt_ns": host_mnt_ns, "suffix_len": [0] * FIELDS, "rules": [{}, {}]}  # fmt: skip
    fwd: dict[tuple[int, bytes], list] = defaultdict(lambda: [0, 0])  # (fld, key bytes) -> [mask, watch bits]
    rev: dict[tuple[int, bytes], int] = defaultdict(int)
    ids: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0] * FIELDS)
    scoped: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    bits = [0, 0]
    agent_only: dict[str, Rule] = {}  # kind -> the first rule above which needs the agent
    for watch in watches:
        path, exact = watch_pattern(watch.path)
        fwd[(2, path.encode() + b"\0" * exact)][1] |= access_bits(watch.access)
    for rule in ruleset.rules:
        if rule.kind not in kernel_patterns.KINDS:
            continue
        kind, name = kernel_patterns.KINDS[rule.kind], "exec" if rule.kind == "exec" else "open"
        fields = kernel_patterns.kernel_fields(rule)
        if rule.kind == "open":
            config["flags"] |= PC_OPENS
        if fields is None or bits[kind] >= kernel_patterns.PRULES:
            why = kernel_patterns.needs_agent(rule) or f"more than {kernel_patterns.PRULES} {name} rules for the kernel"
            if rule.kind == "open":  # reported by the kernel, judged by the agent
                path, exact = watch_pattern(rule.path)
                fwd[(2, path.encode() + b"\0" * exact)][1] |= access_bits(rule.access or ACCESSES)
            if rule.action == "deny" and not rule.audit:
                out.note(rule, f"judged by the agent after the {name}, NOT enforced in the kernel: {why}")
            agent_only.setdefault(rule.kind, rule)
            continue
        if rule.action == "deny" and not rule.audit and rule.kind in agent_only:
            above = agent_only[rule.kind]
            out.note(
                rule, f"rule {above.id} above it needs the agent: where both match, this one decides in the kernel"
            )
        bit = bits[kind]
        bits[kind] += 1
        out.kernel_rules.add(rule.id)
        flag = 1 << bit
        lens = [0, 0, 0]
        for number, (_attr, fld) in enumerate(kernel_patterns.FIELDS[rule.kind]):
            pattern = fields.get(fld)
            if pattern is None or (not pattern.prefix and not pattern.exact):
                config["def_fwd"][fld] |= flag
            else:
                fwd[(fld, pattern.prefix.encode() + b"\0" * pattern.exact)][0] |= flag
            if pattern is None or not pattern.suffix:
                config["def_rev"][fld] |= flag
            else:
                rev[(fld, pattern.suffix.encode()[::-1])] |= flag
                config["suffix_len"][fld] = max(config["suffix_len"][fld], len(pattern.suffix.encode()))
            if pattern is not None:
                lens[number] = pattern.min_len
        if rule.kind == "open":
            for i, access in enumerate(ACCESSES):
                if rule.access is None or access in rule.access:
                    config["access"][i] |= flag
            config["flags"] |= PC_OPENS
        else:
            config["flags"] |= PC_LOADER
            if rule.fileless:
                config["fileless"] |= flag
            if rule.sha256 is not None:
                config["sha"] |= flag
        cgroup_ids = _cgroup_ids(rule, scopes, out) or []
        if rule.action == "deny" and not rule.audit:
            config["denies"][kind] |= flag
            out.open_denies |= rule.kind == "open"
            _guard(rule, fields, scopes, cgroup_ids, out)
        config["rules"][kind][bit] = (out.slots.get(rule.id, 0), ACTION_CODES[rule.action], int(rule.audit), lens)
        for cgid in cgroup_ids:
            if cgid:
                scoped[cgid][kind] |= flag
            else:
                config["every"][kind] |= flag
        for _attr, fld in kernel_patterns.FIELDS[rule.kind]:  # an exact path holds for its file by identity too
            pattern = fields.get(fld)
            if pattern is not None and pattern.exact:
                config["flags"] |= PC_NS_HOLD
                wanted = [s.cgroup_id for s in scopes] if 0 in cgroup_ids else cgroup_ids
                for cgid in wanted:
                    if (found := identities.get((cgid, pattern.prefix))) is not None:
                        ids[found][fld] |= flag
    for (fld, raw), (mask, watch) in _flattened(fwd).items():
        out.entries[FWD_MAP][encode_pat_key(fld, raw)] = PAT.pack(mask, watch)
    for (fld, raw), (mask, _) in _flattened({k: [v, 0] for k, v in rev.items()}).items():
        out.entries[REV_MAP][encode_pat_key(fld, raw)] = PAT.pack(mask, 0)
    for (dev, ino), masks in ids.items():
        out.entries[IDS_MAP][ID_KEY.pack(dev, ino)] = ID.pack(*masks)
    if ids:
        config["flags"] |= PC_IDS
    if out.guard:
        config["flags"] |= PC_GUARD
    if any(w for (fld, _), (_, w) in fwd.items()):
        config["flags"] |= PC_OPENS
    for cgid, masks in scoped.items():
        out.entries[PSCOPE_MAP][CGROUP.pack(cgid)] = PSCOPE.pack(*masks)
        out.own.add(cgid)
    out.entries[CONFIG_MAP][SLOT.pack(0)] = encode_pconfig(config)


def _hash_entries(ruleset: RuleSet, hashes: dict[tuple, str], out: Compiled) -> None:
    """Every file the agent hashed into `exec_hashes`, with the content hash rules (their bits)
    its digest is in; one matching none is there too, so its next exec is not held again."""
    bits = {}
    for rule in ruleset.rules:
        if rule.kind == "exec" and rule.id in out.kernel_rules:
            bits[rule.id] = len(bits)
    digests: dict[str, int] = defaultdict(int)
    for rule in ruleset.rules:
        if rule.id in bits and rule.sha256 is not None:
            for digest in rule.sha256:
                digests[digest] |= 1 << bits[rule.id]
    for key, digest in hashes.items():
        out.entries[HASHES_MAP][HASH_KEY.pack(*key)] = HASH.pack(digests.get(digest, 0))


def _guard(rule: Rule, fields: dict, scopes: list[Scope], cgroup_ids: list[int], out: Compiled) -> None:
    """An enforcing deny of writing to an exact path, for any opener: its file is made
    immutable in the containers it applies to (monitor/guard.py), since a kill cannot undo a
    truncate, rename or chmod done inside the call."""
    opened = fields.get(2)
    if rule.kind != "open" or opened is None or not opened.exact or set(fields) != {2}:
        return
    if rule.access is not None and not set(WRITES) & set(rule.access):
        return
    for cgid in [s.cgroup_id for s in scopes] if 0 in cgroup_ids else cgroup_ids:
        out.guard.add((cgid, opened.prefix))


def _flattened(entries: dict[tuple[int, bytes], list]) -> dict[tuple[int, bytes], tuple[int, int]]:
    """Each key gets the mask and watch bits of every key of its fld that is a prefix of
    it (an exact path's key ends in its NUL, so it is a prefix only of itself)."""
    flat = {}
    for (fld, raw), (mask, watch) in entries.items():
        for (outer_field, outer), (outer_mask, outer_watch) in entries.items():
            if outer_field == fld and outer != raw and raw.startswith(outer) and not outer.endswith(b"\0"):
                mask |= outer_mask
                watch |= outer_watch
        flat[(fld, raw)] = (mask, watch)
    return flat


def _assign_slots(rule_ids: list[str], previous: dict[str, int]) -> dict[str, int]:
    """Slot 0 counts "no rule matched"; a rule keeps its slot across policy versions, and a
    slot freed now is not reused by this write (a call judged by its rule a moment ago may
    still count into it): a later write zeroes it before a new rule takes it."""
    slots = {rid: previous[rid] for rid in rule_ids if rid in previous}
    used = set(previous.values())
    free = (s for s in range(1, MAX_SLOTS) if s not in used)
    for rid in rule_ids:
        if rid not in slots:
            slot = next(free, None)
            if slot is None:
                break  # more rules than counters: the rest decide but count in slot 0
            slots[rid] = slot
    return slots


def _cgroup_ids(rule: Rule, scopes: list[Scope], out: Compiled) -> list[int] | None:
    if not rule.scoped:
        return [0]
    ids = sorted({s.cgroup_id for s in scopes if rule.matches_scope(s.cgroup_id, s.path, s.container)})
    if not ids and rule.action == "deny":
        out.note(rule, "matches no monitored container on this node: nothing to enforce")
    return ids or None


def _ports(rule: Rule, out: Compiled) -> list[int] | None:
    if rule.port_range is None or rule.port_range == (1, 65535):
        return [0]
    low, high = rule.port_range
    if high - low + 1 > MAX_PORTS_PER_RULE:
        out.note(
            rule,
            f"port range {low}-{high} is wider than the kernel maps take ({MAX_PORTS_PER_RULE} ports a rule): "
            + ("not enforced in the kernel" if rule.action == "deny" else "later deny rules may still refuse it"),
        )
        return None
    return list(range(low, high + 1))


def _flatten(bucket: dict) -> dict:
    """Each network gets the best-ranked rule among the networks that contain it."""
    lengths = sorted({net.prefixlen for net in bucket})
    flat = {}
    for net, best in bucket.items():
        for length in lengths:
            if length >= net.prefixlen:
                break
            outer = bucket.get(net.supernet(new_prefix=length))
            if outer is not None and outer[0] < best[0]:
                best = outer
        flat[net] = best
    return flat
