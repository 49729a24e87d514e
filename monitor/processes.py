"""Processes in the containers: exec, exit and open records from the kernel, judged by
exec and file rules.

The kernel (bpfscripts/process.bpf.h) reports every exec and process exit in a monitored
cgroup, and kills a binary an exec rule denies before it runs. The agent adds what the
kernel record lacks: the container, the parent's binary (from the execs it has seen;
otherwise the parent's task name), and the verdict of rules the kernel cannot judge
(globs, parents). A deny the kernel did not apply is reported as such, except for a
process the kernel holds (a new container's first exec, stopped before it ran): that one
is killed here before it ever runs, which is as good as the kernel doing it.
"""

from __future__ import annotations

import collections
import os
import time

from .kernel.layout import PROC_TYPES, access_names
from .rules import Exec, Open, RuleSet

MAX_PROCESSES = 65536  # pids whose binary the agent remembers (for their children's parent)
MAX_GROUPS = 65536  # as the kernel's proc_flows table
GROUP_IDLE_NS = 60 * 10**9  # a group quiet this long leaves the kernel's table (its counts reported)


class ProcGroups:
    """Like records the programs counted instead of sending (a shell loop's execs of one
    binary by one parent, their exits), turned into counts. A sent record carries its
    group's counter: the growth since the last reading is added to its count. A dump of the
    table reports the groups that went quiet, as the last record of each with the count."""

    def __init__(self):
        self.totals: dict[tuple, int] = {}
        self.templates: collections.OrderedDict[tuple, dict] = collections.OrderedDict()

    def resume(self, groups) -> None:
        """At start: what a previous agent's programs counted is not ours to report again."""
        self.totals = {key: folded for _raw, key, _window, folded in groups}

    def growth(self, key: tuple, total: int) -> int:
        before = self.totals.get(key, 0)
        if total <= before:
            return 0  # an older reading (the CPUs' buffers arrive in any order)
        self.totals[key] = total
        return total - before

    def remember(self, key: tuple, event: dict) -> None:
        self.templates.pop(key, None)
        self.templates[key] = {k: v for k, v in event.items() if k != "count"}
        while len(self.templates) > MAX_GROUPS:
            self.templates.popitem(last=False)

    def dump(self, groups) -> list[dict]:
        """Events for what each group counted since it was last reported."""
        events = []
        for _raw, key, _window, folded in groups:
            added = self.growth(key, folded)
            if added:
                template = self.templates.get(key) or _unknown(key)
                events.append(template | {"ts_ns": time.time_ns(), "count": added})
        return events

    def idle(self, groups) -> list[bytes]:
        """Groups quiet for GROUP_IDLE_NS (already reported by `dump`): to delete from the table."""
        cutoff = time.monotonic_ns() - GROUP_IDLE_NS
        gone = [(raw, key) for raw, key, window_ns, _ in groups if window_ns < cutoff]
        for _raw, key in gone:
            self.totals.pop(key, None)
            self.templates.pop(key, None)
        return [raw for raw, _ in gone]


def _unknown(key: tuple) -> dict:
    """A group counted before this agent saw one of its records (it restarted meanwhile)."""
    cgroup_id, _hash, ppid, kind, exit_code = key
    unknown = "(counted in the kernel while no agent read)"
    if kind == 3:  # an open's key holds its access bits where the others hold the parent
        opened = {"path": unknown, "access": access_names(ppid), "result": exit_code, "binary": ""}
        ppid = 0
    else:
        opened = {"binary": unknown}
    return {
        "kind": PROC_TYPES.get(kind, "exec"), "source": "kernel", "cgroup_id": cgroup_id, "cgroup_path": "",
        "container": None, "pid": 0, "tid": 0, "ppid": ppid, "uid": 0, "gid": 0, "start_ns": 0, "comm": "",
        "parent_comm": "", "parent_binary": "", **opened, "args": [],
        "cut": False, "verdict": "allow", "rule_id": "", "severity": "", "enforced": False, "audit": False,
        "policy_version": 0, **({"exit_code": exit_code, "lifetime_ns": 0} if kind == 2 else {}),
    }  # fmt: skip


class ProcessTable:
    """pid -> the binary it exec'd last, for the processes seen; bounded, oldest forgotten.

    The kernel folds like execs (one binary, one parent) into one record with a count, so
    the pids of the folded ones are never heard of: for them, what a child of that parent
    with that task name (the binary's base name) last exec'd is the answer."""

    def __init__(self, limit: int = MAX_PROCESSES):
        self.limit = limit
        self._binary: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._by_parent: collections.OrderedDict[tuple[int, str], str] = collections.OrderedDict()

    def exec(self, pid: int, binary: str, ppid: int = 0, comm: str = "") -> None:
        for table, key in ((self._binary, pid), (self._by_parent, (ppid, comm))):
            table.pop(key, None)
            table[key] = binary
            if len(table) > self.limit:
                table.popitem(last=False)

    def exit(self, pid: int) -> None:
        self._binary.pop(pid, None)

    def binary(self, pid: int, ppid: int = 0, comm: str = "") -> str:
        return self._binary.get(pid, "") or _exe(pid) or self._by_parent.get((ppid, comm), "")


CALLS = {
    "io_uring_setup": "io_uring_setup",
    "clone_files": "clone(CLONE_FILES)",
    "clone_files_parent": "clone(CLONE_FILES)",
    "pidfd_getfd": "pidfd_getfd",
    "compat": "a 32-bit system call",
    "cgroups": "mkdir of a cgroup past the container's 1,024, or a move into one",
}  # a refused call's name


FAMILIES = {2: "IPv4", 10: "IPv6", 17: "AF_PACKET"}
SOCKET_TYPES = {1: "stream", 2: "datagram", 3: "raw", 5: "seqpacket", 10: "packet"}


def socket_text(kind: str, family: int, sock_type: int, protocol: int, unix_path: str = "") -> str:
    """A socket made, as staff read it: "raw socket (IPv4, raw, protocol 1)"; or a unix
    socket connected to: "unix socket /var/run/docker.sock (stream)"."""
    shown = SOCKET_TYPES.get(sock_type & 0xF, f"type {sock_type & 0xF}")
    if kind == "unix":
        return f"unix socket {unix_path} ({shown})"
    return f"{kind} socket ({FAMILIES.get(family, f'family {family}')}, {shown}, protocol {protocol})"


def judge(
    event: dict, ruleset: RuleSet, container: str | None, rule_for_slot=lambda slot: "", in_kernel=lambda rule_id: False
) -> None:
    """Set the verdict of an exec, exit, open or refused call (an exit carries its exec's
    verdict: none). A record whose rule the kernel found (its slot) has that rule, whatever
    its action; for the others the agent judges the rules the kernel does not (`in_kernel`),
    so the two never disagree on what decides."""
    kernel_verdict = event.pop("kernel_verdict", "allow")
    slot = event.pop("slot", 0)
    if event["kind"] == "exit" or event.get("how") == "runtime":  # (an exec of the runtime's is not judged)
        event.update(verdict="allow", rule_id="", severity="", enforced=False, audit=False)
        return
    rule = ruleset.by_id.get(rule_for_slot(slot)) if slot else None
    if rule is not None or kernel_verdict != "allow":  # the kernel's rule decided (killed, or audit)
        event["rule_id"] = rule.id if rule else rule_for_slot(slot)
        event.update(verdict=rule.action if rule else "deny", enforced=kernel_verdict == "deny",
                     audit=kernel_verdict == "audit", severity=rule.severity if rule else "")  # fmt: skip
        if event["kind"] == "open" and event.get("how") == "as_given" and event["verdict"] == "deny":
            event["enforced"] = not event["audit"]  # it failed: nothing was opened (the deny held)
        return
    scope = {"cgroup_id": event["cgroup_id"], "cgroup_path": event["cgroup_path"], "container": container}
    parents = (event["parent_binary"], event["parent_comm"])
    if event["kind"] == "socket":  # every socket rule is the kernel's: one found here it did not have yet
        rule = ruleset.evaluate_socket(event["socket"], **scope, path=event.get("unix_path", ""))
    elif event["kind"] == "open":
        found = Open(event["path"], event["access"], event["binary"], parents, **scope)
        rule = next((r for r in _agent_rules(ruleset, "open", in_kernel) if r.matches_open(found)), None)
    else:
        found = Exec(event["binary"], parents, **scope, fileless=event.get("fileless", False),
                     sha256=event.get("sha256", ""))  # fmt: skip
        rule = next((r for r in _agent_rules(ruleset, "exec", in_kernel) if r.matches_exec(found)), None)
    event.update(
        verdict=rule.action if rule else "allow",
        rule_id=rule.id if rule else "",
        severity=rule.severity if rule else "",
        audit=bool(rule and rule.audit),
        enforced=False,
    )


def _agent_rules(ruleset: RuleSet, kind: str, in_kernel):
    """The rules of a kind the kernel does not judge, in rank order."""
    ranks = ruleset.open_ranks if kind == "open" else ruleset.exec_ranks
    return (ruleset.rules[rank] for rank in ranks if not in_kernel(ruleset.rules[rank].id))


def state(pid: int) -> str:
    """A process's state letter (T: stopped), "" if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return ""
