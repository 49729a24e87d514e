"""In-kernel counts of repeated calls, turned into events with a count.

Two sources count in the kernel and send only a flow's first call per 100 ms: the
connect4/6 programs (KernelFlows: a `folded` counter per flow in their `flows` map, also
carried by every call they send) and connect.bt (FlowCounts). Both counters are
cumulative, never reset, so nothing is lost between a read and a reset; what is new is
the growth since the last reading.

connect.bt prints a flow's first call in each 100 ms and only counts the rest, in a map it
prints every 250 ms and never clears (so no count is lost between a print and a clear).
Here each counter's growth since the last print becomes one event with `count`, shaped like
a printed call (the last printed call of the flow gives pid, uid and process name). A
counter that shrank means the tracer restarted: its whole value is new.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import time

from .kernel.layout import flow_of
from .parsers.bpftrace import LineError

log = logging.getLogger("crossedge.agent")
MAX_TEMPLATES = 65_536  # connect.bt flows remembered for their counts' pid and process name
TEMPLATE_FIELDS = ("pid", "tid", "uid", "gid", "comm", "cgroup_id", "family", "dest_ip", "dest_port", "result")


def _key(event: dict) -> tuple:
    return event["cgroup_id"], event["dest_ip"], event["dest_port"], event["result"]


class FlowCounts:
    def __init__(self):
        self.templates: dict[tuple, dict] = {}
        self.totals: dict[tuple, int] = {}
        self.bad = 0  # map entries that could not be read

    def note(self, event: dict) -> None:
        """A printed IPv4 call: the template for its flow's counted calls (the newest
        MAX_TEMPLATES flows keep one: an older flow's counts go out without pid and name)."""
        if event["family"] == 4:
            key = _key(event)
            self.templates.pop(key, None)  # to the end: newest last
            self.templates[key] = {name: event[name] for name in TEMPLATE_FIELDS}
            if len(self.templates) > MAX_TEMPLATES:
                del self.templates[next(iter(self.templates))]

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
            except (ValueError, struct.error, AttributeError):
                cgroup = None
            if cgroup is None or isinstance(total, bool) or not isinstance(total, int) or total < 0:
                self.bad += 1  # this entry only: the others' counts still go out (raising lost them)
                log.warning("tracer: bad @folded entry %r: %r", raw, total)
                continue
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


KERNEL_TEMPLATE = ("pid", "tid", "uid", "gid", "comm", "family", "rule_id", "dest_name")


class KernelFlows:
    """The connect4/6 programs' per-flow counters -> events with a count, shaped like the
    flow's last sent call (a kernel event as monitor.kernel.layout.decode_event gives it)."""

    def __init__(self):
        self.templates: dict[tuple, dict] = {}
        self.totals: dict[tuple, int] = {}
        self._saved: list | None = None

    def resume(self, flows, state_path: str | None, generation: str) -> None:
        """Start from what was reported before a restart (saved by `save`), so that calls
        counted while no agent ran are reported now, and nothing twice. Without a saved
        state for this generation, the counts found are taken as reported."""
        saved = None
        try:
            with open(state_path or "", encoding="utf-8") as fh:
                state = json.load(fh)
            if state.get("generation") == generation:
                saved = {tuple(row[:-1]): row[-1] for row in state["totals"]}
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            pass  # none, another generation's, or unreadable: counts so far are taken as reported
        if saved is None:
            self.totals = {key: folded for _raw, key, _window, folded in flows}
        else:  # a flow the last agent never saw grow had reported 0
            self.totals = {key: saved.get(key, 0) for _raw, key, _window, _folded in flows}
        self._saved = None

    def save(self, state_path: str, generation: str) -> None:
        """What has been reported so far (written after each flow-table read; atomic).
        A crash between reporting and saving repeats at most that last second's counts."""
        rows = sorted([*key, total] for key, total in self.totals.items())
        if rows == self._saved:
            return
        tmp = f"{state_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"generation": generation, "totals": rows}, fh)
        os.replace(tmp, state_path)
        self._saved = rows

    def sent(self, event: dict) -> int:
        """A sent call (with its `folded` reading): how many counted calls of its flow it
        reveals, which the agent adds to its count (one row, not two)."""
        key = flow_of(event)
        self.templates[key] = {name: event.get(name) for name in KERNEL_TEMPLATE}
        return self._growth(key, event.pop("folded"))

    def dump(self, flows) -> list[dict]:
        """Events for what each flow counted since it was last read (`Enforcer.flows()`).
        A flow no longer in the kernel's table (pruned, another generation's) is forgotten."""
        events = [e for _raw, key, _window, folded in flows if (e := self._grown(key, folded))]
        present = {key for _raw, key, _window, _folded in flows}
        self.forget([key for key in self.templates.keys() | self.totals.keys() if key not in present])
        return events

    def forget(self, keys) -> None:
        for key in keys:
            self.totals.pop(key, None)
            self.templates.pop(key, None)

    def _growth(self, key: tuple, total: int) -> int:
        before = self.totals.get(key, 0)
        if total <= before:
            return 0  # an older reading (perf buffers of other CPUs arrive in any order)
        self.totals[key] = total
        return total - before

    def _grown(self, key: tuple, total: int) -> dict | None:
        if not (added := self._growth(key, total)):
            return None
        cgroup_id, slot, port, ip, verdict, op, name_hash = key
        template = self.templates.get(key) or {
            "pid": 0, "tid": 0, "uid": 0, "gid": 0, "comm": "", "rule_id": "",
            "family": 6 if ":" in ip else 4, "dest_name": None,  # a flow none of whose calls was sent: name unknown
        }  # fmt: skip
        return template | {
            "mono_ns": time.monotonic_ns(),
            "cgroup_id": cgroup_id,
            "slot": slot,
            "dest_ip": ip,
            "dest_port": port,
            "kernel_verdict": verdict,
            "op": op,
            "name_hash": name_hash,
            "count": added,
        }
