"""Joins the kernel's deny events with the traced connect() calls they refused.

Both describe one connection and come through different pipes (bpftool's event pipe,
bpftrace's output) in either order, so each waits up to `window` seconds for the other,
keyed by (pid, destination, port). A pair becomes one event: the connection with the
kernel's rule and `enforced`/`audit`, so a deny is one violation, not two. Whatever is
still unpaired when its window closes goes out alone.
"""

from __future__ import annotations

import time
from collections import deque

from .rules import ip

EPERM = -1


def key(event: dict) -> tuple:
    addr = ip(event["dest_ip"])
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped  # the kernel judges a v4-mapped destination as IPv4
    return event["pid"], addr, event["dest_port"]


def merge(connect: dict, deny: dict) -> dict:
    """The connection as traced, decided by the kernel's rule."""
    connect.update(
        verdict="deny",
        rule_id=deny["rule_id"],
        severity=deny.get("severity") or connect.get("severity", ""),
        enforced=not deny["audit"],
        audit=deny["audit"],
    )
    return connect


class Pairing:
    def __init__(self, window: float = 1.0, clock=time.monotonic):
        self.window, self.clock = window, clock
        # key -> held events, oldest first (a process retrying a denied connect repeats its key)
        self.connects: dict[tuple, deque[tuple[float, dict]]] = {}
        self.denies: dict[tuple, deque[tuple[float, dict]]] = {}
        self.paired = 0

    def connect(self, event: dict) -> list[dict]:
        """A traced connect that a kernel deny may explain; returns what can go out now."""
        deny = self._take(self.denies, key(event))
        if deny is None:
            self._hold(self.connects, event)
            return []
        return [merge(event, deny)]

    def deny(self, event: dict) -> list[dict]:
        connect = self._take(self.connects, key(event))
        if connect is None:
            self._hold(self.denies, event)
            return []
        return [merge(connect, event)]

    def _take(self, table: dict, k: tuple) -> dict | None:
        held = table.get(k)
        if not held:
            return None
        _, event = held.popleft()
        if not held:
            del table[k]
        self.paired += 1
        return event

    def _hold(self, table: dict, event: dict) -> None:
        table.setdefault(key(event), deque()).append((self.clock() + self.window, event))

    def expire(self, force: bool = False) -> tuple[list[dict], list[dict]]:
        """(connects, denies) whose window has closed (all of them with `force`)."""
        now = self.clock()
        out: tuple[list[dict], list[dict]] = ([], [])
        for table, bucket in ((self.connects, out[0]), (self.denies, out[1])):
            for k in list(table):
                held = table[k]
                while held and (force or held[0][0] <= now):
                    bucket.append(held.popleft()[1])
                if not held:
                    del table[k]
        return out

    def __len__(self):
        return sum(map(len, self.connects.values())) + sum(map(len, self.denies.values()))
