"""Scans the programs summed (bpfscripts/scan.bpf.h) -> one summary event per container per
reading.

A container scanning (from a number of new destinations per second on) has its calls to
new destinations added to cumulative counters in its `scans` entry instead of sent one by
one. As with flows, the counters are never reset: what is new is the growth since the last
reading, which becomes an event with `count` (refused calls apart), shaped like a kernel
call to the scan's first destination, with the scan's port range (`dest_port_hi`).
"""

from __future__ import annotations

import time


class ScanSums:
    def __init__(self):
        self.totals: dict[int, tuple[int, int]] = {}  # cgroup id -> (calls, refused) reported

    def resume(self, entries: dict[int, dict]) -> None:
        """What the programs summed before this agent started counts as reported (a previous
        agent reported it, or nobody could)."""
        self.totals = {cgid: (e["calls"], e["denied"]) for cgid, e in entries.items()}

    def dump(self, entries: dict[int, dict]) -> list[dict]:
        """Events for what each container's entry summed since the last reading
        (`Enforcer.scans()`). An entry no longer there is forgotten."""
        now, out = time.monotonic_ns(), []
        for cgid, e in entries.items():
            calls_before, denied_before = self.totals.get(cgid, (0, 0))
            calls = e["calls"] - calls_before
            if calls <= 0 or e["dest_ip"] is None:
                continue
            # the program counts a refusal before its call: a reading may see the first alone
            denied = min(e["denied"] - denied_before, calls)
            self.totals[cgid] = (e["calls"], denied_before + denied)
            base = {
                "mono_ns": now,
                "cgroup_id": cgid,
                "pid": e["pid"],
                "tid": e["pid"],
                "uid": e["uid"],
                "gid": e["gid"],
                "comm": e["comm"],
                "family": e["family"],
                "dest_ip": e["dest_ip"],
                "dest_port": e["port_lo"],
                "dest_port_hi": e["port_hi"],
                "dest_name": None,
                "op": "connect",
                "rule_id": "",
                "name_hash": 0,
            }
            if calls > denied:
                out.append(base | {"kernel_verdict": "allow", "slot": 0, "count": calls - denied})
            if denied:
                out.append(base | {"kernel_verdict": "deny", "slot": e["deny_slot"], "count": denied})
        for cgid in self.totals.keys() - entries.keys():
            del self.totals[cgid]
        return out
