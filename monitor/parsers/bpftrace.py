"""Decoding of `bpftrace -f json` lines.

bpftrace writes one JSON object per line. Only `printf` lines carry event data; the rest
(`attached_probes`, `lost_events`, map prints, errors) are health signals for the
supervisor, never events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class LineError(ValueError):
    """A line that is not what the backend promised: skipped and counted."""


@dataclass(frozen=True)
class Signal:
    kind: str  # "attached" | "lost" | "overflow" | "map" | "other"
    count: int = 0
    raw: object = None


def decode(line: str | bytes) -> str | Signal:
    """Return the printf payload of a data line, or a Signal for any other line."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LineError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or "type" not in obj:
        raise LineError("JSON without a 'type'")
    kind, data = obj["type"], obj.get("data")
    if kind == "printf":
        if not isinstance(data, str):
            raise LineError("printf line without string data")
        return data
    if kind == "attached_probes":
        return Signal("attached", _count(data, "probes"), obj)
    if kind == "lost_events":
        return Signal("lost", _count(data, "events"), obj)
    if kind == "map":
        return Signal("map", 0, data)
    return Signal("other", 0, obj)


def _count(data, key: str) -> int:
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LineError(f"bad '{key}' count")
    return value
