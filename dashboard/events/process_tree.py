"""A container's process tree (who spawned what) from its stored exec and exit records.

A process is a (pid, start) pair: a pid the kernel reuses is another process. A process
that exec'd several times (a shell exec'ing its command) is one node with each binary in
order. A process whose parent never exec'd in the container (the runtime's init, or a
parent from before the records) is a root, labelled with the parent the kernel named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .models import ProcessEvent

MAX_RECORDS = 2000  # the newest records a tree is built from


@dataclass
class Process:
    pid: int
    ppid: int
    start_ns: int
    first: ProcessEvent
    binaries: list[str] = field(default_factory=list)
    exit: ProcessEvent | None = None
    violations: int = 0
    children: list[Process] = field(default_factory=list)

    @property
    def parent_label(self) -> str:
        return f"{self.first.parent_binary or self.first.parent_comm} [{self.ppid}]"


def process_tree(container, limit: int = MAX_RECORDS) -> list[tuple[str, list[Process]]]:
    """The roots of the tree, oldest first, grouped by the parent outside the records that
    started them (the runtime, or whoever ran a command in the container); each root with
    its children, oldest first."""
    records = ProcessEvent.objects.filter(container=container, kind__in=("exec", "exit"))
    records = list(records.order_by("-ts", "-id")[:limit])[::-1]
    procs: dict[tuple[int, int], Process] = {}
    for r in records:
        key = (r.pid, r.start_ns)
        proc = procs.get(key)
        if proc is None:
            proc = procs[key] = Process(r.pid, r.ppid, r.start_ns, r)
        if r.kind == "exec":
            proc.binaries.append(r.binary or r.comm)
            proc.violations += r.verdict != "allow"
        else:
            proc.exit = r
    by_pid: dict[int, list[Process]] = {}
    for proc in procs.values():
        by_pid.setdefault(proc.pid, []).append(proc)
    roots: dict[str, list[Process]] = {}
    for proc in procs.values():
        parent = _parent(proc, by_pid)
        if parent:
            parent.children.append(proc)
        else:
            roots.setdefault(proc.parent_label, []).append(proc)
    return list(roots.items())


def _parent(proc: Process, by_pid: dict[int, list[Process]]) -> Process | None:
    """The process with the parent's pid that started before this one (the latest such)."""
    candidates = [p for p in by_pid.get(proc.ppid, ()) if p.start_ns <= proc.start_ns and p is not proc]
    return max(candidates, key=lambda p: p.start_ns, default=None)


MAX_ANCESTRY = 32


def ancestry(record: ProcessEvent) -> list[ProcessEvent]:
    """The exec records of a process's parent, grandparent, ... in its container, nearest
    first, as far as the records go (the one before them is named by the last's parent)."""
    chain, current = [], record
    for _ in range(MAX_ANCESTRY):
        parent = (
            ProcessEvent.objects.filter(
                node_id=current.node_id,
                cgroup_path=current.cgroup_path,
                kind="exec",
                pid=current.ppid,
                start_ns__lte=current.start_ns,
            )  # fmt: skip
            .order_by("-start_ns", "-ts")
            .first()
        )
        if parent is None or parent.pk in {p.pk for p in chain}:
            break
        chain.append(parent)
        current = parent
    return chain


def life(record: ProcessEvent) -> tuple[list[ProcessEvent], ProcessEvent | None]:
    """Every exec of this process (it may exec more than once) and its exit, if seen."""
    same = ProcessEvent.objects.filter(node_id=record.node_id, pid=record.pid, start_ns=record.start_ns)
    return list(same.filter(kind="exec").order_by("ts", "id")), same.filter(kind="exit").first()
