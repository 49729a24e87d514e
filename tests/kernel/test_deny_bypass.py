"""What a deny stops: exec and open denies tried as an attacker would, inside real Docker and
Podman containers, against the real kernel, agent and dashboard.

Each technique reaches the forbidden file some other way than its plain name: a hard link, a
symbolic link, other spellings, a relative name, a descriptor (execveat, /proc/self/fd/N), a
memfd copy, a script naming it as interpreter, a chroot, the dynamic loader, a sibling sharing
the descriptor table, io_uring, another process's descriptor (pidfd_getfd), a 32-bit system
call (int 0x80, which no syscall tracepoint sees). Every one must
be killed before the program prints a byte and be stored as a violation naming the container
(README "What a deny stops"). tests/kernel/attack.c is the attacker.
"""

import asyncio
import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import ProcessEvent, Violation

from .conftest import deliver_until, runtime_agent
from .test_enforce_agent import run_agent, stop
from .test_first_call import cgroups_made

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]

ATTACK = Path(__file__).with_name("attack.c")
SECRET = b"TOPSECRET\n"
LOADER = "/lib64/ld-linux-x86-64.so.2"
UNCONFINED = ("--security-opt", "seccomp=unconfined")

POLICY = [
    {"id": "no-forbidden", "match": {"binary": "/opt/forbidden"}, "action": "deny"},
    {"id": "no-forbidden-dyn", "match": {"binary": "/opt/forbidden-dyn"}, "action": "deny"},
    {"id": "no-fileless", "match": {"fileless": True}, "action": "deny"},
    # an alert the agent judges (a glob in the middle), above a deny the kernel judges: the deny holds
    {"id": "odd-shell", "match": {"binary": "/b?n/*sh"}, "action": "alert"},
    {"id": "no-drop", "match": {"binary": "/tmp/drop/*"}, "action": "deny"},
    {"id": "no-secret", "match": {"path": "/opt/secret", "access": ["read"]}, "action": "deny"},
    {"id": "protect", "match": {"path": "/etc/ce-protected", "access": ["write", "create", "truncate"]},
     "action": "deny"},
]  # fmt: skip

# name, shell command (run as `t NAME CMD...`), the rule that must stop it
EXECS = [
    ("direct", "/opt/forbidden hello", "no-forbidden"),
    ("hardlink", "/opt/hl hello", "no-forbidden"),
    ("symlink", "/opt/sl hello", "no-forbidden"),
    ("slashes", "//opt//forbidden hello", "no-forbidden"),
    ("dot", "/opt/./forbidden hello", "no-forbidden"),
    ("dotdot", "/opt/../opt/forbidden hello", "no-forbidden"),
    ("procroot", "/proc/self/root/opt/forbidden hello", "no-forbidden"),
    ("execfd", "$A execfd /opt/forbidden", "no-forbidden"),
    ("procfd", "$A procfd /opt/forbidden", "no-forbidden"),
    ("execat", "$A execat /opt forbidden", "no-forbidden"),
    ("script", "/opt/script", "no-forbidden"),
    ("chroot", "$A chroot /opt exec /forbidden", "no-forbidden"),
    ("memfd", "$A memfd /opt/forbidden", "no-fileless"),
    ("loader", f"{LOADER} /opt/forbidden-dyn hello", "no-forbidden-dyn"),
    ("drop", "/tmp/drop/x hello", "no-drop"),
]
OPENS = [
    ("read", "$A read /opt/secret", "no-secret"),
    ("open-hardlink", "$A read /opt/secret-hl", "no-secret"),
    ("open-symlink", "$A read /opt/secret-sl", "no-secret"),
    ("open-spelling", "$A read //opt/./secret", "no-secret"),
    ("open-procroot", "$A read /proc/self/root/opt/secret", "no-secret"),
    ("openat2", "$A openat2 /opt/secret", "no-secret"),
    ("reopen", "$A reopen /opt/secret r", "no-secret"),
    ("open-chroot", "$A chroot /opt read /secret", "no-secret"),
    ("uring", "$A uring", "no-secret"),
    ("getfd", "$A getfd /etc/plain", "no-secret"),
    ("int80", "$A int80read /opt/secret", "no-secret"),  # a 32-bit call: no syscall tracepoint sees it
]
# changes made inside the call, before any kill could come: refused by the file's immutable
# attribute (the agent set it for the write deny), whatever the name (status 1, errno 1)
WRITES = [
    ("truncate", "$A truncate /etc/ce-protected"),
    ("truncate-link", "$A truncate /tmp/pl"),
    ("truncate-spelling", "$A truncate /etc/./ce-protected"),
    ("trunc-open", "$A trunc /etc/ce-protected"),
    ("rename-over", "$A rename /tmp/evil /etc/ce-protected"),
    ("unlink", "rm -f /etc/ce-protected"),
    ("chmod", "chmod 666 /etc/ce-protected"),
    ("chown", "chown 1:1 /etc/ce-protected"),
    ("hardlink-it", "ln /etc/ce-protected /tmp/p2"),
]
SETUP = """
A=/bin/attack
t() { name=$1; shift; out=$(eval "$@" 2>&1); echo "$name $? $out" | tr '\\n' ' '; echo; }
ln /opt/forbidden /opt/hl; ln -s /opt/forbidden /opt/sl; ln /opt/secret /opt/secret-hl
ln -s /opt/secret /opt/secret-sl; mkdir /tmp/drop; cp /opt/forbidden /tmp/drop/x
ln -s /etc/ce-protected /tmp/pl; echo evil > /tmp/evil
printf '#!/opt/forbidden hello\\n' > /opt/script; chmod +x /opt/script
"""
AFTER = """
cd /opt; t relative ./forbidden hello; t open-relative $A read secret; cd /
t clonefiles $A clonefiles /etc/plain
t copy $A exec /tmp/copy
echo "protected $(cat /etc/ce-protected)"
"""


@pytest.fixture
def image_extra(tmp_path_factory):
    """The attacker (static), the forbidden binary (a copy of it), a dynamic copy and the
    loader with its libc, a secret and a protected file."""
    out = tmp_path_factory.mktemp("attack")
    static, dynamic = out / "attack", out / "attack-dyn"
    subprocess.run(["clang", "-O2", "-static", "-Wall", "-o", str(static), str(ATTACK)], check=True)
    subprocess.run(["clang", "-O2", "-Wall", "-o", str(dynamic), str(ATTACK)], check=True)
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    return {"/bin/attack": str(static), "/opt/forbidden": str(static), "/tmp/copy": str(static),
            "/opt/forbidden-dyn": str(dynamic), LOADER: os.path.realpath(LOADER),
            "/lib/x86_64-linux-gnu/libc.so.6": libc, "/opt/secret": SECRET, "/etc/ce-protected": b"original\n",
            "/etc/plain": b"plain\n"}  # fmt: skip


async def test_every_way_to_the_forbidden_file_is_killed_and_reported(runtime, enforcement):
    tag = uuid.uuid4().hex[:6]
    name = f"bypass-{tag}"
    enforcer = enforcement.enforcer
    node, agent = await runtime_agent(runtime, enforcement, "bp", POLICY)
    script = SETUP + "".join(f"t {n} {cmd}\n" for n, cmd, _ in EXECS + OPENS) + AFTER
    script += "".join(f"t {n} {cmd}\n" for n, cmd in WRITES + [("write-reopen", "$A reopen /etc/ce-protected w")])
    script += 'echo "protected $(cat /etc/ce-protected)"\n'  # unchanged, still there
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            # no seccomp profile: the kernel's refusals must hold without the runtime's
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script], 120, UNCONFINED)
            out = done.stdout.decode()
            lines = {line.split(" ", 1)[0]: line for line in out.splitlines()}
            expected = [n for n, _, _ in EXECS + OPENS] + ["relative", "open-relative"]
            refused = [n for n, _ in WRITES] + ["write-reopen"]

            def violations():
                return Violation.objects.filter(container__name=name).count() >= len(expected) + len(refused)

            try:
                await deliver_until(agent, node, violations, timeout=15)
            except AssertionError:
                print(
                    await sync_to_async(
                        lambda: (
                            sorted(
                                Violation.objects.filter(container__name=name).values_list("rule_id", "kind", "target")
                            )
                            + sorted(
                                ProcessEvent.objects.filter(container__name=name)
                                .exclude(kind="exit")
                                .values_list("kind", "binary", "path", "verdict", "rule_id", "given")
                            )
                        )
                    )()
                )
                raise
        finally:
            await stop(runner)
    assert "RAN" not in out.replace("copy 0 RAN", "") and SECRET.decode().strip() not in out, out
    for technique in expected:
        assert lines.get(technique, "").startswith(f"{technique} 137 "), f"{technique} not killed:\n{out}"
    assert lines["clonefiles"].startswith("clonefiles 0 child killed 9"), out  # the sharing child, at clone
    assert lines["copy"].startswith("copy 0 RAN"), out  # a copy is another file: for allow-lists and hashes
    for technique in refused:
        assert lines.get(technique, "").startswith(f"{technique} 1 "), f"{technique} not refused:\n{out}"
    assert out.count("protected original") == 2, out  # before the writes and after them

    def check():
        found = {(v.rule_id, v.kind): v for v in Violation.objects.filter(container__name=name)}
        for technique, _cmd, rule in EXECS + OPENS + [("relative", "", "no-forbidden"),
                                                        ("open-relative", "", "no-secret")]:  # fmt: skip
            kinds = [k for r, k in found if r == rule]
            assert kinds, f"{technique}: no violation of {rule}"
        rows = Violation.objects.filter(container__name=name)
        assert rows.filter(enforced=True).count() == rows.count(), [v.unenforced for v in rows]
        calls = set(rows.filter(kind="call").values_list("target", flat=True))
        assert len(calls) >= 4, calls  # io_uring_setup, clone(CLONE_FILES), pidfd_getfd, a 32-bit call
        writes = rows.filter(rule_id="protect")
        assert writes.count() >= len(refused) and {v.target.split(" ")[0] for v in writes} == {"/etc/ce-protected"}
        calls = set(
            ProcessEvent.objects.filter(container__name=name, rule_id="protect").values_list("given", flat=True)
        )
        named = {c.split("(")[0] for c in calls}
        assert named >= {"truncate", "rename", "unlink", "chmod", "chown", "link", "open"}, calls
        memfd = ProcessEvent.objects.get(container__name=name, kind="exec", fileless=True)
        assert memfd.verdict == "deny" and memfd.binary.startswith("/memfd:payload")
        loader = ProcessEvent.objects.get(container__name=name, kind="exec", rule_id="no-forbidden-dyn")
        assert loader.binary == "/opt/forbidden-dyn" and loader.given.endswith("ld-linux-x86-64.so.2")
        hard = ProcessEvent.objects.filter(container__name=name, kind="exec", binary="/opt/hl", rule_id="no-forbidden")
        assert hard.exists()  # the hard link's own name, judged as the file it is (by identity)

    await sync_to_async(check)()


async def test_an_allow_list_kills_a_copy_under_any_name_and_lets_the_listed_run(runtime, enforcement):
    """What may run in the container, then `{binary: "*"}` deny: a copy of an allowed binary
    under another name is another file, and killed; the listed binaries run."""
    tag = uuid.uuid4().hex[:6]
    name = f"listed-{tag}"
    enforcer = enforcement.enforcer
    node, agent = await runtime_agent(runtime, enforcement, "al", [
        {"id": "may-run", "priority": 10, "match": {"container": "listed-*", "binary": "/bin/busybox"},
         "action": "allow"},
        {"id": "may-attack", "priority": 10, "match": {"container": "listed-*", "binary": "*/attack"},
         "action": "allow"},
        {"id": "nothing-else", "priority": 20, "match": {"container": "listed-*", "binary": "*"}, "action": "deny"},
    ])  # fmt: skip
    script = "/bin/attack hello; echo listed $?; cp /bin/attack /tmp/renamed; /tmp/renamed hello; echo copy $?"
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script], 60)
            out = done.stdout.decode()
            await deliver_until(agent, node, lambda: Violation.objects.filter(rule_id="nothing-else").exists(), 10)
        finally:
            await stop(runner)
    assert out.split("\n")[:3] == ["RAN", "listed 0", "copy 137"], out + done.stderr.decode()

    def check():
        v = Violation.objects.get(rule_id="nothing-else")
        assert (v.target, v.enforced, v.container.name) == ("/tmp/renamed", True, name)

    await sync_to_async(check)()


async def test_a_content_hash_deny_kills_a_copy_under_any_name_and_the_kernel_learns_it(runtime, enforcement, netprobe):
    """`{sha256: ...}` deny on netprobe's content: a renamed copy is held at its first exec,
    hashed and killed before it runs; its second exec the kernel kills by itself (it learned
    the file); a memfd copy too; another binary is hashed once and runs."""
    digest = hashlib.sha256(netprobe.read_bytes()).hexdigest()
    name = f"hashed-{uuid.uuid4().hex[:6]}"
    enforcer = enforcement.enforcer
    policy = [{"id": "no-probe-content", "match": {"container": "hashed-*", "sha256": digest}, "action": "deny"}]
    node, agent = await runtime_agent(runtime, enforcement, "hs", policy)
    script = ("cp /bin/netprobe /tmp/np; /tmp/np connect 127.8.8.8 1; echo first $?; /tmp/np connect 127.8.8.8 1; "
              "echo again $?; /bin/attack memfd /bin/netprobe; echo memfd $?; /bin/attack hello; "
              "echo other $?")  # fmt: skip
    with cgroups_made(enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script], 60)
            out = done.stdout.decode()
            rows = Violation.objects.filter(rule_id="no-probe-content")
            other = ProcessEvent.objects.filter(container__name=name, kind="exec", binary="/bin/attack")
            await deliver_until(agent, node, lambda: rows.count() >= 3 and other.exists(), 10)
        finally:
            await stop(runner)
    assert out.split("\n")[:5] == ["first 137", "again 137", "memfd 137", "RAN", "other 0"], out + done.stderr.decode()
    assert agent.health()["holds"].get("expired", 0) == 0

    def check():
        killed = ProcessEvent.objects.filter(container__name=name, rule_id="no-probe-content").order_by("ts")
        assert [(p.binary, p.enforced, p.sha256) for p in killed[:2]] == [("/tmp/np", True, digest)] * 2
        assert killed[2].fileless and killed[2].binary.startswith("/memfd:")
        ran = other.latest("ts")  # (the one that printed RAN; the memfd one ran attack first)
        assert ran.verdict == "allow" and len(ran.sha256) == 64 and ran.sha256 != digest

    await sync_to_async(check)()
