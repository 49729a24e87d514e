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

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field

from ..rules import Rule, RuleSet
from .layout import MATCH_LEN, MAX_SLOTS, KernelRule, encode_exec_key, encode_key

ANY_V4 = ipaddress.ip_network("0.0.0.0/0")
ANY_V6 = ipaddress.ip_network("::/0")
MAX_PORTS_PER_RULE = 1024
GLOB_CHARS = frozenset("*?[")
MAPS = {4: "rules4", 6: "rules6"}
EXEC_MAP = "exec_rules"
POLICY_MAPS = (*MAPS.values(), EXEC_MAP)  # every map the policy writes


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

    def note(self, rule: Rule, message: str) -> None:
        self.notes.append({"rule_id": rule.id, "message": message})


def compile_rules(ruleset: RuleSet, scopes: list[Scope], slots: dict[str, int] | None = None) -> Compiled:
    """`slots` is the previous rule id -> slot assignment, kept so counters stay with their rule."""
    out = Compiled()
    out.slots = _assign_slots([r.id for r in ruleset.rules], slots or {})
    # bucket (family, cgroup_id, port) -> {network: (rank, rule)}
    buckets: dict[tuple[int, int, int], dict] = defaultdict(dict)
    for rank, rule in enumerate(ruleset.rules, start=1):
        if rule.kind != "connect":
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
        target = out.entries[MAPS[family]]
        for net, (rank, rule) in _flatten(bucket).items():
            value = KernelRule(rank, out.slots.get(rule.id, 0), rule.action, rule.audit, rule.id)
            target[encode_key(net, cgid, port)] = value.encode()
    _exec_entries(ruleset, scopes, out)
    return out


def exec_pattern(rule: Rule) -> tuple[str, bool] | None:
    """(path, exact) for a rule the exec trie can judge: a binary path, or a path prefix
    ending in "*"; None for globs elsewhere, parent matches, or paths too long for the key."""
    if rule.parent is not None or rule.binary is None:
        return None
    path, exact = (rule.binary, True) if not GLOB_CHARS & set(rule.binary) else (rule.binary[:-1], False)
    if not exact and (not rule.binary.endswith("*") or GLOB_CHARS & set(path) or not path):
        return None
    if len(path.encode()) + 1 >= MATCH_LEN:  # a path the kernel reads whole, with room for its NUL
        return None
    return path, exact


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
            out.entries[EXEC_MAP][encode_exec_key(path, cgid, exact)] = value.encode()


def _assign_slots(rule_ids: list[str], previous: dict[str, int]) -> dict[str, int]:
    """Slot 0 counts "no rule matched"; a rule keeps its slot across policy versions, and a
    slot freed now is not reused until its counter has been deleted (by this write)."""
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
