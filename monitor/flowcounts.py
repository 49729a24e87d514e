"""The tracer's in-kernel counts of repeated calls, turned into events with a count.

connect.bt prints a flow's first call in each 100 ms and only counts the rest, in a map it
prints every 250 ms and never clears (so no count is lost between a print and a clear).
Here each counter's growth since the last print becomes one event with `count`, shaped like
a printed call (the last printed call of the flow gives pid, uid and process name). A
counter that shrank means the tracer restarted: its whole value is new.
"""

from __future__ import annotations

import socket
import struct
import time

from .parsers.bpftrace import LineError

TEMPLATE_FIELDS = ("pid", "tid", "uid", "gid", "comm", "cgroup_id", "family", "dest_ip", "dest_port", "result")


def _key(event: dict) -> tuple:
    return event["cgroup_id"], event["dest_ip"], event["dest_port"], event["result"]


class FlowCounts:
    def __init__(self):
        self.templates: dict[tuple, dict] = {}
        self.totals: dict[tuple, int] = {}

    def note(self, event: dict) -> None:
        """A printed IPv4 call: the template for its flow's counted calls."""
        if event["family"] == 4:
            self.templates[_key(event)] = {name: event[name] for name in TEMPLATE_FIELDS}

    def restart(self) -> None:
        self.totals.clear()

    def dump(self, maps: dict) -> list[dict]:
        """Events for the counts added since the last dump (`maps` is bpftrace's map record)."""
        counters = maps.get("@folded") if isinstance(maps, dict) else None
        if counters is None:
            return []
        if not isinstance(counters, dict):
            raise LineError("@folded is not a map")
        now = time.monotonic_ns()
        out = []
        for raw, total in counters.items():
            try:
                cgroup, addr, port, ret = (int(x) for x in raw.split(","))
                ip = socket.inet_ntoa(struct.pack("<I", addr))
            except (ValueError, struct.error):
                raise LineError(f"bad @folded key {raw!r}") from None
            if not isinstance(total, int) or total < 0:
                raise LineError(f"bad @folded count {total!r}")
            key = (cgroup, ip, port, ret)
            before = self.totals.get(key, 0)
            self.totals[key] = total
            added = total - before if total >= before else total
            if added <= 0:
                continue
            template = self.templates.get(key) or {
                "pid": 0, "tid": 0, "uid": 0, "gid": 0, "comm": "", "cgroup_id": cgroup, "family": 4,
                "dest_ip": ip, "dest_port": port, "result": ret,
            }  # fmt: skip
            out.append(template | {"mono_ns": now, "count": added})
        return out
