"""The process programs' maps (bpfscripts/process.bpf.h): exec counts per container
cgroup, and process records the kernel could not send. The records themselves arrive on
the `procs` perf array (monitor/parsers/perf_lines.parse_proc)."""

from __future__ import annotations

from . import bpftool
from .layout import CGROUP, COUNTER, from_json_bytes, hex_bytes


def exec_counts(layout) -> dict[int, int]:
    """cgroup id -> execs counted in the kernel since its entry was made."""
    return {
        CGROUP.unpack(from_json_bytes(item["key"]))[0]: COUNTER.unpack(from_json_bytes(item["value"]))[0]
        for item in bpftool.map_dump(layout.map("exec_counts"))
    }


def forget_counts(layout, cgroup_ids) -> None:
    """Drop the counts of cgroups that are gone (the map is bounded; their totals were reported)."""
    pin = layout.map("exec_counts")
    bpftool.batch([bpftool.delete_command(pin, hex_bytes(CGROUP.pack(i))) for i in sorted(cgroup_ids)])


def lost(layout) -> tuple[int, int]:
    """Exec and exit records the programs could not send (summed over CPUs)."""
    totals = [0, 0]
    for item in bpftool.map_dump(layout.map("proc_lost")):
        index = int.from_bytes(from_json_bytes(item["key"]), "little")
        if index < 2:
            totals[index] = sum(COUNTER.unpack(from_json_bytes(v["value"]))[0] for v in item.get("values", []))
    return totals[0], totals[1]
