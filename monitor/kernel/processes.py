"""The process and file programs' maps (bpfscripts/process.bpf.h, file.bpf.h): exec counts
per container cgroup, the groups of like records counted instead of sent, and records lost.
The records themselves arrive on the `procs` perf array (monitor/parsers/perf_lines.parse_proc)."""

from __future__ import annotations

from . import batch, bpftool
from .layout import CGROUP, COUNTER, FLOW, decode_proc_key, hex_bytes


def exec_counts(layout) -> dict[int, int]:
    """cgroup id -> execs counted in the kernel since its entry was made."""
    return {CGROUP.unpack(key)[0]: COUNTER.unpack(value)[0] for key, value in batch.dump(layout.map("exec_counts"))}


def forget_counts(layout, cgroup_ids) -> None:
    """Drop the counts of cgroups that are gone (the map is bounded; their totals were reported)."""
    pin = layout.map("exec_counts")
    bpftool.batch([bpftool.delete_command(pin, hex_bytes(CGROUP.pack(i))) for i in sorted(cgroup_ids)])


def groups(layout) -> list[tuple[bytes, tuple, int, int]]:
    """Every group of like records the programs count: (raw key, key, last window ns, folded)."""
    out = []
    for raw, value in batch.dump(layout.map("proc_flows")):
        window_ns, folded = FLOW.unpack(value)
        out.append((raw, decode_proc_key(raw), window_ns, folded))
    return out


def forget_groups(layout, raws) -> None:
    pin = layout.map("proc_flows")
    bpftool.batch([bpftool.delete_command(pin, hex_bytes(raw)) for raw in raws])


LOST = ("lost_exec", "lost_exit", "lost_open", "lost_refused_call", "lost_socket")  # proc_lost's slots


def lost(layout) -> tuple[int, ...]:
    """Exec, exit, open, refused call and socket records the programs could not send
    (summed over CPUs)."""
    totals = [0] * len(LOST)
    for key, count in batch.sums(layout.map("proc_lost")):
        index = int.from_bytes(key, "little")
        if index < len(totals):
            totals[index] = count
    return tuple(totals)
