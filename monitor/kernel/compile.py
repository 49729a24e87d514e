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
from ..files import Watch
from ..rules import ACCESSES, GLOB_CHARS, Rule, RuleSet
from .layout import (
    CGROUP,
    FILE_SCOPED,
    FILE_WATCHED,
    FQDN_RULES_LEN,
    MATCH_LEN,
    MAX_SLOTS,
    SCAN_RULES_LEN,
    SLOT,
    KernelRule,
    access_bits,
    encode_block,
    encode_file_rule,
    encode_fqdn_key,
    encode_fqdn_rules,
    encode_key,
    encode_limit,
    encode_path_key,
    encode_scan_limits,
    encode_source_key,
)

ANY_V4 = ipaddress.ip_network("0.0.0.0/0")
ANY_V6 = ipaddress.ip_network("::/0")
MAX_PORTS_PER_RULE = 1024
MAPS = {4: "rules4", 6: "rules6"}
EXEC_MAP = "exec_rules"
FILE_MAP = "file_rules"
CONFIG_MAP = "file_config"  # what file.bpf.h needs to know before it reads a path
FQDN_MAP = "fqdn_rules"  # name patterns -> their rules (dns.bpf.h)
UNNAMED_MAP = "fqdn_unnamed"  # every container's rules for addresses never resolved: one array entry
BLOCK_MAPS = {4: "block4", 6: "block6"}  # source networks -> their rule (xdp.bpf.h)
SCAN_MAP = "scan_limits"  # containers -> the summing threshold and their scan rules (scan.bpf.h)
SCAN_EVERY_MAP = "scan_every"  # ...and every container's: one array entry
FLOOD_MAP = "flood_limits"  # the SYN flood rules (xdp.bpf.h): one array entry
LIMIT_MAP = "limits"  # containers -> their egress and connection rates (limits.bpf.h)
POLICY_MAPS = (*MAPS.values(), EXEC_MAP, FILE_MAP, CONFIG_MAP, FQDN_MAP, UNNAMED_MAP, *BLOCK_MAPS.values(), SCAN_MAP,
               SCAN_EVERY_MAP, FLOOD_MAP, LIMIT_MAP)  # fmt: skip
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

    def note(self, rule: Rule, message: str) -> None:
        self.notes.append({"rule_id": rule.id, "message": message})


def compile_rules(
    ruleset: RuleSet,
    scopes: list[Scope],
    slots: dict[str, int] | None = None,
    watches: tuple[Watch, ...] = (),
    summarise: int = SUMMARISE,
) -> Compiled:
    """`slots` is the previous rule id -> slot assignment, kept so counters stay with their
    rule; `watches` the node's file watches (monitor.files); `summarise` the new destinations
    per second from which a container's calls are summed in the kernel (scan.bpf.h)."""
    out = Compiled()
    out.entries[CONFIG_MAP][SLOT.pack(0)] = SLOT.pack(0)  # an array entry: always written, never deleted
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
    _exec_entries(ruleset, scopes, out)
    _file_entries(ruleset, scopes, watches, out)
    _fqdn_entries(ruleset, scopes, out)
    _block_entries(ruleset, out)
    _scan_entries(ruleset, scopes, summarise, out)
    _flood_entry(ruleset, out)
    _limit_entries(ruleset, scopes, out)
    return out


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


def path_pattern(glob: str) -> tuple[str, bool] | None:
    """(path, exact) for a glob a path trie can judge: a path, or a path prefix ending in
    "*"; None for globs elsewhere or paths too long for the key."""
    path, exact = (glob, True) if not GLOB_CHARS & set(glob) else (glob[:-1], False)
    if not exact and (not glob.endswith("*") or GLOB_CHARS & set(path) or not path):
        return None
    if len(path.encode()) + 1 >= MATCH_LEN:  # a path the kernel reads whole, with room for its NUL
        return None
    return path, exact


def exec_pattern(rule: Rule) -> tuple[str, bool] | None:
    """The exec trie's (path, exact) for a rule, or None for parent matches and globs."""
    if rule.parent is not None or rule.binary is None:
        return None
    return path_pattern(rule.binary)


def watch_pattern(glob: str) -> tuple[str, bool]:
    """The trie entry that lets every path a glob can match through: the glob's literal
    part before its first wildcard, as a prefix (cut to what the key holds)."""
    exact = not GLOB_CHARS & set(glob)
    literal = glob if exact else glob[: min(glob.index(c) for c in GLOB_CHARS if c in glob)]
    raw = literal.encode()
    if len(raw) + 1 >= MATCH_LEN:
        return raw[: MATCH_LEN - 1].decode(errors="ignore"), False
    return literal, exact


def _file_entries(ruleset: RuleSet, scopes: list[Scope], watches: tuple[Watch, ...], out: Compiled) -> None:
    """File rules and watches into `file_rules`. Every file rule and watch makes its path
    (or its glob's literal prefix) reported for its accesses; a rule the trie can judge
    (a path or path prefix, naming no binary or parent) also decides, per access, flattened
    like the exec trie. As there, a rule judged in user space keeps denies below it out."""
    # cgroup -> (path, exact) -> [watch bits, {access bit index: (rank, rule)}]
    buckets: dict[int, dict[tuple[str, bool], list]] = defaultdict(dict)

    def entry(cgid: int, pattern: tuple[str, bool]) -> list:
        return buckets[cgid].setdefault(pattern, [0, {}])

    for watch in watches:
        entry(0, watch_pattern(watch.path))[0] |= access_bits(watch.access)
    above: Rule | None = None
    for rank, rule in enumerate(ruleset.rules, start=1):
        if rule.kind != "open":
            continue
        accesses = rule.access or ACCESSES
        cgroup_ids = _cgroup_ids(rule, scopes, out) or []
        for cgid in cgroup_ids:
            entry(cgid, watch_pattern(rule.path))[0] |= access_bits(accesses)
        pattern = path_pattern(rule.path) if rule.binary is None and rule.parent is None else None
        if pattern is None or above is not None:
            if rule.action == "deny" and not rule.audit:
                why = f"rule {above.id} above it is judged in user space" if pattern else (
                    "its glob, binary or parent is judged by the agent after the open")  # fmt: skip
                out.note(rule, f"{why}: reported, not killed in the kernel")
            above = above or (rule if pattern is None else None)
            continue
        for cgid in cgroup_ids:
            decided = entry(cgid, pattern)[1]
            for bit, name in enumerate(ACCESSES):
                if name in accesses and (bit not in decided or decided[bit][0] > rank):
                    decided[bit] = (rank, rule)
    for cgid, bucket in buckets.items():
        for (path, exact), (watch, decided) in bucket.items():
            decided = dict(decided)
            for (outer, outer_exact), (outer_watch, outer_decided) in bucket.items():
                if (outer, outer_exact) == (path, exact) or outer_exact or not path.startswith(outer):
                    continue
                watch |= outer_watch
                for bit, hit in outer_decided.items():
                    if bit not in decided or hit[0] < decided[bit][0]:
                        decided[bit] = hit
            verdicts = [
                (decided[bit][0], out.slots.get(decided[bit][1].id, 0), decided[bit][1].action, decided[bit][1].audit)
                if bit in decided else None
                for bit in range(len(ACCESSES))
            ]  # fmt: skip
            out.entries[FILE_MAP][encode_path_key(path, cgid, exact)] = encode_file_rule(watch, verdicts)
    _file_config(buckets, out)


def _file_config(buckets: dict, out: Compiled) -> None:
    """What the program needs to know before reading a path: whether anything is watched,
    and whether a lookup for the opener's own cgroup can hit."""
    config = FILE_WATCHED if any(buckets.values()) else 0
    config |= FILE_SCOPED if any(cgid and bucket for cgid, bucket in buckets.items()) else 0
    out.entries[CONFIG_MAP] = {SLOT.pack(0): SLOT.pack(config)}


def _exec_entries(ruleset: RuleSet, scopes: list[Scope], out: Compiled) -> None:
    """Exec rules into `exec_rules`, flattened like the connect tries: an entry carries the
    best-ranked rule among the entries whose path is a prefix of its own, so the longest
    match is the first match. A rule judged in user space (a glob, a parent) keeps every
    deny below it out of the kernel, where it could not be overruled."""
    buckets: dict[int, dict[tuple[str, bool], tuple[int, Rule]]] = defaultdict(dict)
    above: Rule | None = None
    for rank, rule in enumerate(ruleset.rules, start=1):
        if rule.kind != "exec":
            continue
        pattern = exec_pattern(rule)
        if pattern is None or above is not None:
            if rule.action == "deny" and not rule.audit:
                why = f"rule {above.id} above it is judged in user space" if pattern else (
                    "its parent or glob is judged by the agent after the exec")  # fmt: skip
                out.note(rule, f"{why}: reported, not killed in the kernel")
            above = above or (rule if pattern is None else None)
            continue
        for cgid in _cgroup_ids(rule, scopes, out) or []:
            bucket = buckets[cgid]
            if pattern not in bucket or bucket[pattern][0] > rank:
                bucket[pattern] = (rank, rule)
    for cgid, bucket in buckets.items():
        for (path, exact), best in bucket.items():
            for (outer, outer_exact), hit in bucket.items():
                contains = not outer_exact and path.startswith(outer) or (outer, outer_exact) == (path, exact)
                if contains and hit[0] < best[0]:
                    best = hit
            rank, rule = best
            value = KernelRule(rank, out.slots.get(rule.id, 0), rule.action, rule.audit, rule.id)
            out.entries[EXEC_MAP][encode_path_key(path, cgid, exact)] = value.encode()


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
