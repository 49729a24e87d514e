"""What the rate limits held back (bpfscripts/limits.bpf.h) -> limit reports.

The programs count, per limited container, the bytes and packets its egress limit dropped
and the calls its connection limit refused, cumulatively. Each reading's growth is added
up per container, and reported as it starts biting and then at most once every
REPORT_EVERY seconds while it goes on: one violation a minute, not one per packet. A
counter that shrank was written afresh (a rule change): its whole value is new.
"""

from __future__ import annotations

import time

REPORT_EVERY = 60.0
FIELDS = ("held_bytes", "held_packets", "refused")


class LimitReports:
    def __init__(self, every: float = REPORT_EVERY):
        self.every = every
        self.totals: dict[int, tuple[int, ...]] = {}
        self.pending: dict[int, list[int]] = {}  # cgroup id -> growth not reported yet
        self.since: dict[int, float] = {}  # ... counted since (monotonic)
        self.reported: dict[int, float] = {}  # ... last reported at

    def resume(self, entries: dict[int, dict]) -> None:
        """What was held back before this agent started counts as reported."""
        self.totals = {cgid: tuple(e[f] for f in FIELDS) for cgid, e in entries.items()}

    def add(self, entries: dict[int, dict], now: float | None = None) -> list[tuple[int, dict, dict, float]]:
        """(cgroup id, entry, growth by field, seconds it covers) for each container due a report."""
        now = time.monotonic() if now is None else now
        due = []
        for cgid, e in entries.items():
            values = tuple(e[f] for f in FIELDS)
            before = self.totals.get(cgid, (0,) * len(FIELDS))
            self.totals[cgid] = values
            grown = [v - b if v >= b else v for v, b in zip(values, before, strict=True)]
            if any(grown):
                acc = self.pending.setdefault(cgid, [0] * len(FIELDS))
                self.since.setdefault(cgid, now)
                for i, g in enumerate(grown):
                    acc[i] += g
            if cgid in self.pending and now - self.reported.get(cgid, float("-inf")) >= self.every:
                window = max(1.0, now - self.since.pop(cgid))
                due.append((cgid, e, dict(zip(FIELDS, self.pending.pop(cgid), strict=True)), window))
                self.reported[cgid] = now
        for cgid in self.totals.keys() - entries.keys():
            for table in (self.totals, self.pending, self.since, self.reported):
                table.pop(cgid, None)
        return due
