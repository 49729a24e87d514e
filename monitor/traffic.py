"""Traffic per container and flow, summed per minute for the dashboard.

The packet programs (bpfscripts/traffic.bpf.h) count bytes, payload and segments per
(container cgroup, family, protocol, local port, remote address, remote port) in the
kernel; the agent drains their table every TRAFFIC_POLL seconds (Enforcer.read_traffic)
and adds each reading to the minute it was taken in. A minute goes out once it is over,
as one record per flow: what billing and the traffic page sum.

A scan (or any connect() storm) makes every call a flow of its own: thousands of flows a
second, each a row. So a container's flows in a minute past MAX_FLOWS go into its "other"
row (protocol 0, as the kernel's own overflow row), first come first kept: the bytes stay
exact per container, the rows stay bounded.
"""

from __future__ import annotations

import collections

COUNTERS = ("bytes_in", "bytes_out", "payload_in", "payload_out", "packets_in", "packets_out")
PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 0: "other"}
MINUTE_NS = 60 * 10**9
MAX_FLOWS = 1000  # flows per container per minute kept apart; the rest sum into its "other" row
NOWHERE = {4: "0.0.0.0", 6: "::"}


class TrafficMinutes:
    """Readings summed per (minute, flow) until their minute is over."""

    def __init__(self, max_flows: int = MAX_FLOWS):
        self.max_flows = max_flows
        self.pending: dict[tuple[int, tuple], list[int]] = {}
        self.flows = collections.Counter()  # (minute, cgroup id) -> flows kept apart
        self.totals = collections.Counter()  # every counter read since start (for health)

    def add(self, rows: list[tuple[tuple, tuple]], now_ns: int) -> None:
        minute = now_ns // MINUTE_NS
        for flow, counters in rows:
            key = (minute, flow)
            if key not in self.pending:
                cgroup = (minute, flow[0])
                if self.flows[cgroup] >= self.max_flows:
                    self.totals["flows_folded"] += 1
                    key = (minute, (flow[0], flow[1], 0, 0, NOWHERE[flow[1]], 0))
                elif flow[2]:  # a flow, not the kernel's "other" row
                    self.flows[cgroup] += 1
            acc = self.pending.setdefault(key, [0] * len(COUNTERS))
            for i, value in enumerate(counters):
                acc[i] += value
                self.totals[COUNTERS[i]] += value

    def due(self, now_ns: int, force: bool = False) -> list[tuple[int, tuple, dict[str, int]]]:
        """(minute, flow, counters) of every minute that is over (every one, with force)."""
        current = now_ns // MINUTE_NS
        done = [key for key in self.pending if force or key[0] < current]
        for cgroup in [c for c in self.flows if force or c[0] < current]:
            del self.flows[cgroup]
        return [(minute, flow, dict(zip(COUNTERS, self.pending.pop((minute, flow)), strict=True)))
                for minute, flow in sorted(done)]  # fmt: skip
