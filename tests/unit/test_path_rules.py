"""Exec and open rules in the kernel (bpfscripts/path.bpf.h): for any rule set, the rule the
kernel's masks pick is the rule engine's first match among the rules the kernel judges, an
open any rule or watch names is reported, and an exact path holds for its file's every name.
Checked on random policies by a model of the program's lookups on the compiled entries."""

import functools
import operator
import random

import pytest

from monitor.files import Watch, watched
from monitor.kernel import patterns
from monitor.kernel.compile import Scope, compile_rules
from monitor.kernel.layout import ACCESS_BITS, CGROUP, ID, ID_KEY, PAT, PSCOPE, decode_pat_key, decode_pconfig
from monitor.rules import ACCESSES, Exec, Open, RuleSet

SCOPES = [Scope(101, "/x.slice/docker-a.scope", "app-a"), Scope(102, "/x.slice/docker-b.scope", "app-b")]
EXEC, PARENT, OPENED, BINARY, OPEN_PARENT = range(5)


class Kernel:
    """What path.bpf.h computes, from the compiled entries."""

    def __init__(self, compiled):
        e = compiled.entries
        self.fwd = {decode_pat_key(k): PAT.unpack(v) for k, v in e["pat_fwd"].items()}
        self.rev = {decode_pat_key(k): PAT.unpack(v)[0] for k, v in e["pat_rev"].items()}
        self.ids = {ID_KEY.unpack(k): ID.unpack(v) for k, v in e["pat_ids"].items()}
        self.scoped = {CGROUP.unpack(k)[0]: PSCOPE.unpack(v) for k, v in e["pscope"].items()}
        self.config = decode_pconfig(e["pconfig"][b"\0\0\0\0"])
        self.slots = {slot: rid for rid, slot in compiled.slots.items()}

    def field(self, number: int, path: str, identity=None) -> tuple[int, int]:
        """(rules whose pattern for the field matches, watch bits): the longest prefix
        entry, the identity's mask, the longest suffix entry (the path's end reversed)."""
        raw, c = path.encode() + b"\0", self.config
        hits = [
            (len(k), v) for (f, k), v in self.fwd.items() if f == number and raw[: patterns.PATH_BYTES].startswith(k)
        ]
        mask, watch = max(hits, key=lambda h: h[0])[1] if hits else (0, 0)
        fwd = c["def_fwd"][number] | mask | (self.ids.get(identity, (0,) * 5)[number] if identity else 0)
        back = path.encode()[::-1][: c["suffix_len"][number]]
        ends = [(len(k), v) for (f, k), v in self.rev.items() if f == number and back.startswith(k)]
        rev = c["def_rev"][number] | (max(ends, key=lambda h: h[0])[1] if ends else 0)
        return fwd & rev, watch

    def first(self, kind: int, cand: int, lens) -> str | None:
        for bit in range(patterns.PRULES):
            if cand >> bit & 1:
                slot, _action, _audit, min_len = self.config["rules"][kind][bit]
                if all(n >= m for n, m in zip(lens, min_len, strict=True)):
                    return self.slots[slot]
        return None

    def scope(self, kind: int, cgid: int) -> int:
        return self.config["every"][kind] | self.scoped.get(cgid, (0, 0))[kind]

    def exec(self, cgid, binary, parent, fileless=False, identity=None) -> str | None:
        cand = self.scope(0, cgid) & self.field(EXEC, binary, identity)[0]
        if not fileless:
            cand &= ~self.config["fileless"]
        cand &= self.field(PARENT, parent)[0]
        return self.first(0, cand, (len(binary.encode()), len(parent.encode()), 0))

    def open(self, cgid, path, access, binary, parent, identity=None) -> tuple[str | None, bool]:
        """(the deciding rule, whether the open is reported)."""
        bits = sum(ACCESS_BITS[a] for a in access)
        cand = self.scope(1, cgid)
        cand &= functools.reduce(operator.or_, (m for i, m in enumerate(self.config["access"]) if bits & (1 << i)), 0)
        named, watch = self.field(OPENED, path, identity)
        cand &= named & self.field(BINARY, binary)[0] & self.field(OPEN_PARENT, parent)[0]
        rule = self.first(1, cand, (len(path.encode()), len(binary.encode()), len(parent.encode())))
        return rule, rule is not None or bool(watch & bits)


EXEC_PATHS = ["/bin/sh", "/usr/bin/dash", "/usr/bin/nc", "/dev/shm/x", "/dev/shm/a/b", "/tmp/evil", "/bin/sha1sum",
              "/memfd:payload", "/usr/bin/bash", "/bin/shsh"]  # fmt: skip
PARENTS = ["/usr/sbin/nginx", "/usr/bin/python3.11", "/bin/sh", ""]


def random_exec_rule(rng, i):
    match = {"binary": rng.choice(["/bin/sh", "/bin/*", "/dev/shm/*", "/usr/bin/nc", "/bin/sh*", "*/evil", "*sh",
                                   "/usr/*sh", "/bin/[bd]ash", "*", "/dev/*/b"])}  # fmt: skip
    if rng.random() < 0.3:
        match["container"] = rng.choice(["app-a", "app-b", "app-*"])
    if rng.random() < 0.3:
        match["parent"] = rng.choice(["*/nginx", "/usr/bin/python*", "*/p?thon*", "/bin/sh"])
    if rng.random() < 0.15:
        match["fileless"] = True
    return {"id": f"x{i}", "priority": rng.randrange(5), "match": match,
            "action": rng.choice(["allow", "alert", "deny"])}  # fmt: skip


def kernel_rules(ruleset, compiled, kind):
    return [r for r in ruleset.rules if r.kind == kind and r.id in compiled.kernel_rules]


@pytest.mark.parametrize("seed", range(60))
def test_the_kernel_picks_the_engines_first_match_among_its_exec_rules(seed):
    rng = random.Random(seed)
    ruleset = RuleSet.from_specs([random_exec_rule(rng, i) for i in range(rng.randrange(1, 12))], 1)
    compiled = compile_rules(ruleset, SCOPES)
    kernel = Kernel(compiled)
    mine = kernel_rules(ruleset, compiled, "exec")
    assert {r.id for r in ruleset.rules if patterns.kernel_fields(r) is not None} == {r.id for r in mine}
    for scope in SCOPES:
        for path in EXEC_PATHS:
            for parent in PARENTS:
                nameless = path.startswith("/memfd:")
                proc = Exec(path, (parent, "comm"), scope.cgroup_id, None, scope.container, fileless=nameless)
                expected = next((r.id for r in mine if r.matches_exec(proc)), None)
                assert kernel.exec(scope.cgroup_id, path, parent, nameless) == expected, (path, parent, scope)


def test_an_exact_path_holds_for_its_file_by_identity_in_the_containers_that_have_it():
    ruleset = RuleSet.from_specs([{"id": "no", "match": {"binary": "/opt/forbidden"}, "action": "deny"}], 1)
    compiled = compile_rules(ruleset, SCOPES, identities={(101, "/opt/forbidden"): (41, 7)})
    kernel = Kernel(compiled)
    assert kernel.exec(101, "/tmp/hardlink", "", identity=(41, 7)) == "no"  # another name, the same file
    assert kernel.exec(101, "/tmp/hardlink", "", identity=(41, 8)) is None
    assert kernel.exec(102, "/opt/forbidden", "") == "no"  # by its path where its file was not looked up


FILE_PATHS = ["/etc/shadow", "/etc/shadowx", "/etc/hosts", "/etc/ssl/a.pem", "/run/docker.sock", "/home/u/.ssh/id",
              "/tmp/x", "/usr/bin/ls", "/e", "/", "/etc", "/run/docker.sockets", "/srv/k.pem"]  # fmt: skip
ACCESS_SETS = [("read",), ("write", "create", "truncate"), ("read", "write"), ("write",), ("truncate",)]


def random_file_rule(rng, i):
    match = {"path": rng.choice(["/etc/shadow", "/etc/*", "/etc/ssl/*", "/run/docker.sock", "/home/*/.ssh/*", "/*",
                                 "/e", "/et*", "*shadow", "*.pem", "/etc/*.pem", "/r?n/*"])}  # fmt: skip
    if rng.random() < 0.5:
        match["access"] = list(rng.choice(ACCESS_SETS))
    if rng.random() < 0.3:
        match["container"] = rng.choice(["app-a", "app-b", "app-*"])
    if rng.random() < 0.15:
        match["binary"] = rng.choice(["*/nginx", "/usr/bin/cat"])
    if rng.random() < 0.1:
        match["parent"] = "/bin/*sh"
    return {"id": f"f{i}", "priority": rng.randrange(5), "match": match,
            "action": rng.choice(["allow", "alert", "deny"])}  # fmt: skip


@pytest.mark.parametrize("seed", range(60))
def test_the_kernel_reports_what_rules_and_watches_name_and_picks_the_engines_first_match(seed):
    rng = random.Random(seed)
    ruleset = RuleSet.from_specs([random_file_rule(rng, i) for i in range(rng.randrange(1, 12))], 1)
    watches = (Watch("/tmp/*", ("write",)), Watch("/home/*/.ssh/*"))
    compiled = compile_rules(ruleset, SCOPES, watches=watches)
    kernel = Kernel(compiled)
    mine = kernel_rules(ruleset, compiled, "open")
    for scope in SCOPES:
        for path in FILE_PATHS:
            for access in ACCESS_SETS:
                for binary, parent in (("/usr/sbin/nginx", "/bin/sh"), ("/usr/bin/cat", "/usr/bin/dash")):
                    op = Open(path, access, binary, (parent, "comm"), scope.cgroup_id, None, scope.container)
                    expected = next((r.id for r in mine if r.matches_open(op)), None)
                    rule, reported = kernel.open(scope.cgroup_id, path, access, binary, parent)
                    assert rule == expected, (path, access, binary, scope)
                    named = any(r.matches_open(op) for r in ruleset.rules) or watched(path, access, watches)
                    assert not named or reported, (path, access, scope)


def test_globs_the_kernel_takes_and_those_it_leaves_to_the_agent():
    assert patterns.kernel_pattern("/bin/sh") == patterns.Pattern("/bin/sh", exact=True)
    assert patterns.kernel_pattern("/dev/shm/*") == patterns.Pattern("/dev/shm/")
    assert patterns.kernel_pattern("*/nc") == patterns.Pattern("", "/nc")
    assert patterns.kernel_pattern("/bin/**sh") == patterns.Pattern("/bin/", "sh")
    for glob in ("/home/*/.ssh/*", "/bin/[bd]ash", "/b?n/sh", "/" + "x" * 200):
        assert patterns.kernel_pattern(glob) is None, glob
    assert patterns.Pattern("/ab", "bc").matches("/abbc") and not patterns.Pattern("/ab", "bc").matches("/abc")


def test_notes_say_which_deny_the_agent_judges_and_which_the_kernel_holds_below_it():
    ruleset = RuleSet.from_specs(
        [
            {"id": "odd", "match": {"binary": "/b?n/*sh"}, "action": "alert"},
            {"id": "shm", "match": {"binary": "/dev/shm/*"}, "action": "deny"},
            {"id": "keys", "match": {"path": "/home/*/.ssh/*"}, "action": "deny"},
        ],
        1,
    )
    compiled = compile_rules(ruleset, SCOPES)
    notes = {n["rule_id"]: n["message"] for n in compiled.notes}
    assert "this one decides in the kernel" in notes["shm"] and "odd" in notes["shm"]
    assert "NOT enforced in the kernel" in notes["keys"]
    assert compiled.kernel_rules == {"shm"}
    config = decode_pconfig(compiled.entries["pconfig"][b"\0\0\0\0"])
    assert config["denies"] == (1, 0)  # shm is the first exec rule the kernel has
    fwd = {decode_pat_key(k): PAT.unpack(v) for k, v in compiled.entries["pat_fwd"].items()}
    assert fwd[(OPENED, b"/home/")][1] == sum(ACCESS_BITS[a] for a in ACCESSES)  # reported for the agent
