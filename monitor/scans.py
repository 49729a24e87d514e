"""Scans the programs summed (bpfscripts/scan.bpf.h) -> summary events: a scan's first at
the first reading that sees it, then one per container every REPORT_EVERY seconds while it
goes on (and a last one when the agent stops).

A container scanning (from a number of new destinations per second on) has its calls to
new destinations added to cumulative counters in its `scans` entry instead of sent one by
one. As with flows, the counters are never reset: what is new is the growth since the last
reading, which becomes an event with `count` (refused calls apart), shaped like a kernel
call to the scan's first destination, with the scan's port range (`dest_port_hi`).
The scan rule's violation goes out at once, from the kernel; the sums can wait: a row a
second for as long as a scan lasts was most of what the dashboard spent on it (each batch
costs its ingest a transaction, whatever it holds).
"""

from __future__ import annotations

import time
from collections.abc import Collection

REPORT_EVERY = 5.0  # seconds between a going scan's summary rows


class ScanSums:
    def __init__(self, every: float = REPORT_EVERY):
        self.every = every
        self.totals: dict[int, tuple[int, int]] = {}  # cgroup id -> (calls, refused) reported
        self.reported: dict[int, float] = {}  # cgroup id -> monotonic time of its last summary

    def resume(self, entries: dict[int, dict]) -> None:
        """What the programs summed before this agent started counts as reported (a previous
        agent reported it, or nobody could)."""
        self.totals = {cgid: (e["calls"], e["denied"]) for cgid, e in entries.items()}

    def dump(self, entries: dict[int, dict], force: bool = False, ending: Collection[int] = ()) -> list[dict]:
        """Events for what each container's entry summed since its last summary
        (`Enforcer.scans()`), for the containers whose last one is REPORT_EVERY old, those
        `ending` (their entries are forgotten next), or all (`force`). An entry no longer
        there is forgotten."""
        now, out = time.monotonic_ns(), []
        at = now / 1e9
        for cgid, e in entries.items():
            calls_before, denied_before = self.totals.get(cgid, (0, 0))
            calls = e["calls"] - calls_before
            if calls <= 0 or e["dest_ip"] is None:
                continue
            if not force and cgid not in ending and at - self.reported.get(cgid, float("-inf")) < self.every:
                continue
            self.reported[cgid] = at
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
            self.reported.pop(cgid, None)
        return out
