"""Processes in the containers: exec and exit records from the kernel, judged by exec rules.

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
import signal

from .rules import Exec, RuleSet

MAX_PROCESSES = 65536  # pids whose binary the agent remembers (for their children's parent)


class ProcessTable:
    """pid -> the binary it exec'd last, for the processes seen; bounded, oldest forgotten."""

    def __init__(self, limit: int = MAX_PROCESSES):
        self.limit = limit
        self._binary: collections.OrderedDict[int, str] = collections.OrderedDict()

    def exec(self, pid: int, binary: str) -> None:
        self._binary.pop(pid, None)
        self._binary[pid] = binary
        if len(self._binary) > self.limit:
            self._binary.popitem(last=False)

    def exit(self, pid: int) -> None:
        self._binary.pop(pid, None)

    def binary(self, pid: int) -> str:
        return self._binary.get(pid, "") or _exe(pid)


def judge(event: dict, ruleset: RuleSet, container: str | None, rule_for_slot=lambda slot: "") -> None:
    """Set the verdict of an exec or exit record (an exit carries its exec's verdict: none)."""
    kernel_verdict = event.pop("kernel_verdict", "allow")
    slot = event.pop("slot", 0)
    if event["kind"] == "exit":
        event.update(verdict="allow", rule_id="", severity="", enforced=False, audit=False)
        return
    if kernel_verdict != "allow":  # the kernel's exec rule decided (killed, or audit)
        event["rule_id"] = rule_for_slot(slot)
        rule = ruleset.by_id.get(event["rule_id"])
        event.update(verdict="deny", enforced=kernel_verdict == "deny", audit=kernel_verdict == "audit")
        event["severity"] = rule.severity if rule else ""
        return
    proc = Exec(
        binary=event["binary"],
        parents=(event["parent_binary"], event["parent_comm"]),
        cgroup_id=event["cgroup_id"],
        cgroup_path=event["cgroup_path"],
        container=container,
    )
    rule = ruleset.evaluate_exec(proc)
    event.update(
        verdict=rule.action if rule else "allow",
        rule_id=rule.id if rule else "",
        severity=rule.severity if rule else "",
        audit=bool(rule and rule.audit),
        enforced=False,
    )


def kill_if_held(pid: int) -> bool:
    """SIGKILL a process the kernel stopped at exec (it has run none of its own code)."""
    if state(pid) != "T":
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


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
