"""The kernel remembers files no open rule names (bpfscripts/quiet.bpf.h), so that their
next open skips the path walk. These turn that memory against a deny, as an attacker
would: a file is opened until it is remembered, then put under the denied directory
without touching it (a rename of a directory above it, a mount moved there) or named by a
new rule, and opened again: killed, every time. Each process stays on one CPU (the memory
is per CPU), and each test first checks that the file was remembered at all."""

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.kernel import bpftool
from monitor.kernel.enforcer import runs_32_bit_calls
from monitor.rules import RuleSet

pytestmark = pytest.mark.kernel

OPENER = r"""
import os, subprocess, sys
how, root = sys.argv[1:3]
def opens(path, n=3):
    for _ in range(n):
        with open(path) as fh:
            fh.read()
if how == "rename":
    opens(f"{root}/pub/d/f")
    print("remembered", flush=True)
    os.rename(f"{root}/pub/d", f"{root}/secret/d")  # the file's own dentry is untouched
    print("moved", flush=True)
    opens(f"{root}/secret/d/f", 1)
elif how == "rename32":  # the same rename as a 32-bit call, which no syscall tracepoint sees
    opens(f"{root}/pub/d/f")
    print("remembered", flush=True)
    done = subprocess.run([sys.argv[3], "int80rename", f"{root}/pub/d", f"{root}/secret/d"])
    print("moved" if done.returncode == -9 and os.path.exists(f"{root}/secret/d/f") else done, flush=True)
    opens(f"{root}/secret/d/f", 1)
elif how == "mount":
    run = lambda *a: subprocess.run(["mount", *a], check=True)
    run("--make-rprivate", "/")  # (this process's own mount namespace: nothing reaches the host)
    run("-t", "tmpfs", "ce-quiet", f"{root}/pub/m")
    with open(f"{root}/pub/m/f", "w") as fh:
        fh.write("m")
    opens(f"{root}/pub/m/f")
    print("remembered", flush=True)
    run("--move", f"{root}/pub/m", f"{root}/secret/m")  # the same dentry on the same mount, elsewhere
    print("moved", flush=True)
    opens(f"{root}/secret/m/f", 1)
else:  # a new rule
    opens(f"{root}/pub/g")
    print("remembered", flush=True)
    sys.stdin.readline()
    opens(f"{root}/pub/g", 1)
print("read it", flush=True)
"""

ATTACK = Path(__file__).with_name("attack.c")
DENY = {"id": "no-secret", "match": {"path": "{root}/secret/*"}, "action": "deny"}


def remembered(enforcer) -> int:
    """Files the kernel remembers as named by no rule, on any CPU."""
    dump = bpftool.run("map", "dump", "pinned", enforcer.layout.map("quiet")) or []
    return sum(1 for e in dump for cpu in e.get("values", []) if any(int(b, 16) for b in cpu["value"][:8]))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "fs"
    for d in ("pub/d", "pub/m", "secret/m"):
        (root / d).mkdir(parents=True)
    (root / "pub" / "d" / "f").write_text("f")
    (root / "pub" / "g").write_text("g")
    return root


def started(enforcement, root, name):
    app = enforcement.container(name)
    enforcement.enforcer.start()
    deny = dict(DENY, match={"path": f"{root}/secret/*"})
    enforcement.enforcer.sync(RuleSet.from_specs([deny], 1))
    return app, deny


@pytest.fixture(scope="module")
def attacker(tmp_path_factory):
    """tests/kernel/attack.c, built static (for its 32-bit rename)."""
    out = tmp_path_factory.mktemp("attack") / "attack"
    subprocess.run(["clang", "-O2", "-static", "-Wall", "-o", str(out), str(ATTACK)], check=True)
    return out


def opener(app, how, root, attacker=""):
    return app.spawn(["taskset", "-c", "0", sys.executable, "-c", OPENER, how, str(root), str(attacker)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.parametrize("how", ["rename", "mount", "rename32"])
def test_a_remembered_file_moved_under_a_deny_is_killed(enforcement, tree, attacker, how):
    """(The 32-bit rename's caller is killed at the call, an open deny being in force, but
    the rename is done: the kernel then believes nothing it remembered.)"""
    app, _ = started(enforcement, tree, f"quiet-{how}")
    proc = opener(app, how, tree, attacker)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out.split("\n")) == (-9, ["remembered", "moved", ""])
    assert remembered(enforcement.enforcer) > 0  # the memory was in play


def test_a_remembered_file_a_new_rule_names_is_killed(enforcement, tree):
    app, deny = started(enforcement, tree, "quiet-policy")
    proc = opener(app, "policy", tree)
    assert proc.stdout.readline() == "remembered\n"
    assert remembered(enforcement.enforcer) > 0
    named = {"id": "no-g", "match": {"path": f"{tree}/pub/g"}, "action": "deny"}
    enforcement.enforcer.sync(RuleSet.from_specs([deny, named], 2))
    out, _ = proc.communicate("go\n", timeout=30)
    assert (proc.returncode, out) == (-9, "")


def test_an_unnamed_file_stays_readable_when_remembered(enforcement, tree):
    """The other side: the memory changes no verdict for a file no rule names."""
    app, _ = started(enforcement, tree, "quiet-plain")
    proc = opener(app, "policy", tree)
    assert proc.stdout.readline() == "remembered\n"
    out, _ = proc.communicate("go\n", timeout=30)
    assert (proc.returncode, out) == (0, "read it\n")


def test_32_bit_calls_are_refused_only_while_an_open_deny_is_in_force(enforcement, tree, attacker):
    """The program that sees them runs at every system call of the node: attached with the
    first open deny, detached with the last."""
    assert runs_32_bit_calls()  # this kernel takes them (else the attack below proves nothing)
    app, deny = started(enforcement, tree, "quiet-compat")
    enforcer = enforcement.enforcer
    assert enforcer.health()["compat_refused"]
    reader = app.spawn([str(attacker), "int80read", str(tree / "pub" / "g")], stdout=subprocess.PIPE, text=True)
    assert reader.communicate(timeout=10) == ("", None) and reader.returncode == -9  # even of a file no rule names
    enforcer.sync(RuleSet.from_specs([dict(deny, action="alert")], 2))
    assert not enforcer.health()["compat_refused"]
    reader = app.spawn([str(attacker), "int80read", str(tree / "pub" / "g")], stdout=subprocess.PIPE, text=True)
    assert reader.communicate(timeout=10) == ("g", None) and reader.returncode == 0
