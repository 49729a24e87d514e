"""Traffic per container and flow, summed per minute for the dashboard.

The packet programs (bpfscripts/traffic.bpf.h) count bytes, payload and segments per
(container cgroup, family, protocol, local port, remote address, remote port) in the
kernel; the agent drains their table every TRAFFIC_POLL seconds (Enforcer.read_traffic)
and adds each reading to the minute it was taken in. A minute goes out once it is over,
as one record per flow: what billing and the traffic page sum.
"""

from __future__ import annotations

import collections

COUNTERS = ("bytes_in", "bytes_out", "payload_in", "payload_out", "packets_in", "packets_out")
PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 0: "other"}
MINUTE_NS = 60 * 10**9


class TrafficMinutes:
    """Readings summed per (minute, flow) until their minute is over."""

    def __init__(self):
        self.pending: dict[tuple[int, tuple], list[int]] = {}
        self.totals = collections.Counter()  # every counter read since start (for health)

    def add(self, rows: list[tuple[tuple, tuple]], now_ns: int) -> None:
        minute = now_ns // MINUTE_NS
        for flow, counters in rows:
            acc = self.pending.setdefault((minute, flow), [0] * len(COUNTERS))
            for i, value in enumerate(counters):
                acc[i] += value
                self.totals[COUNTERS[i]] += value

    def due(self, now_ns: int, force: bool = False) -> list[tuple[int, tuple, dict[str, int]]]:
        """(minute, flow, counters) of every minute that is over (every one, with force)."""
        current = now_ns // MINUTE_NS
        done = [key for key in self.pending if force or key[0] < current]
        return [(minute, flow, dict(zip(COUNTERS, self.pending.pop((minute, flow)), strict=True)))
                for minute, flow in sorted(done)]  # fmt: skip
