"""Back-pressure: in an event storm, allowed events become per-kind counts.

Above `threshold` events per second (judged on each whole second, with hysteresis: the
storm ends below half of it), an allowed event is not queued alone but counted into its
group and sent once per `window` as one event with `count`: a connection by its flow
(cgroup, destination, port, result, process name), an exec by (cgroup, binary, parent's
binary), an exit by (cgroup, process name, exit status). The last one seen gives the pids.
Violations are never folded, and nothing is dropped here: the counts add up to what was
seen. (A shell loop spawning thousands of processes a second is one row a second, not
thousands: each row costs the dashboard far more than the process cost the node.)
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("crossedge.agent")
THRESHOLD = 2000  # events/s
WINDOW = 1.0  # seconds a folded count covers


class StormFolder:
    def __init__(self, threshold: int = THRESHOLD, window: float = WINDOW):
        self.threshold, self.window = threshold, window
        self.storm = False
        self.folded = 0
        self._second, self._this_second = int(time.monotonic()), 0
        self._flows: dict[tuple, dict] = {}
        self._since = time.monotonic()

    def offer(self, event: dict) -> bool:
        """Count the event toward the rate; True if it was folded (the caller must not queue it)."""
        self._tick()
        if not (self.storm and event["verdict"] == "allow" and "count" not in event):
            return False
        key = _group(event)
        held = self._flows.get(key)
        if held is None:
            self._flows[key] = event | {"count": 1} | ({"kind": "aggregate"} if "dest_ip" in event else {})
        else:
            held["count"] += 1
            for name in ("pid", "tid", "ppid", "start_ns", "lifetime_ns"):  # the latest one
                if name in event:
                    held[name] = event[name]
        self.folded += 1
        return True

    @property
    def pending(self) -> bool:
        """Whether a folded count waits for its window to close."""
        return bool(self._flows)

    def due(self, force: bool = False) -> list[dict]:
        """The folded flows whose window has closed (all of them with `force`)."""
        if not force and time.monotonic() - self._since < self.window:
            return []
        self._since = time.monotonic()
        flows, self._flows = list(self._flows.values()), {}
        return flows

    def _tick(self) -> None:
        second = int(time.monotonic())
        if second != self._second:
            rate = self._this_second if second == self._second + 1 else 0
            self._second, self._this_second = second, 0
            if self.threshold and not self.storm and rate > self.threshold:
                self.storm = True
                log.warning("event storm (%d/s): folding allowed connections into per-flow counts", rate)
            elif self.storm and rate < self.threshold // 2:
                self.storm = False
                log.info("event storm over (%d/s): every connection reported singly again", rate)
        self._this_second += 1


def _group(event: dict) -> tuple:
    if "dest_ip" in event:
        return (event["cgroup_id"], event["dest_ip"], event["dest_port"], event["result"], event["comm"])
    if event["kind"] == "exec":
        return (event["cgroup_id"], "exec", event["binary"], event["parent_binary"])
    return (event["cgroup_id"], "exit", event["comm"], event.get("exit_code"))
