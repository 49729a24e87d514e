"""Parser for bpfscripts/connect.bt.

The script prints one space-separated record per connect() after it returns:
`connect <nsecs> <pid> <tid> <uid> <gid> <cgroup> <af> <daddr> <dport> <ret> <comm>`.
comm is last because it is chosen by the traced process and may hold spaces or quotes;
it is everything after the tenth space.
"""

from __future__ import annotations

from ..rules import ip
from .bpftrace import LineError

FIELDS = 12
FAMILIES = {2: 4, 10: 6}  # AF_INET, AF_INET6 -> IP version


def parse(payload: str) -> dict:
    """One event dict from a printf payload; LineError if it is not a whole record."""
    if not payload.endswith("\n"):
        raise LineError("truncated record (no end of line)")
    parts = payload[:-1].split(" ", FIELDS - 1)
    if len(parts) != FIELDS or parts[0] != "connect":
        raise LineError(f"expected {FIELDS} fields starting with 'connect'")
    _, mono_ns, pid, tid, uid, gid, cgroup_id, af, daddr, dport, ret, comm = parts
    try:
        event = {
            "mono_ns": int(mono_ns),
            "pid": int(pid),
            "tid": int(tid),
            "uid": int(uid),
            "gid": int(gid),
            "cgroup_id": int(cgroup_id),
            "family": FAMILIES[int(af)],
            "dest_port": int(dport),
            "result": int(ret),
        }
        addr = ip(daddr)
    except (ValueError, KeyError) as exc:
        raise LineError(f"bad field: {exc}") from None
    if addr.version != event["family"]:
        raise LineError("address does not match its family")
    if not 0 <= event["dest_port"] <= 65535 or min(event["pid"], event["tid"], event["cgroup_id"]) < 0:
        raise LineError("number out of range")
    mapped = addr.version == 6 and addr.ipv4_mapped
    event["dest_ip"] = f"::ffff:{mapped}" if mapped else str(addr)  # as people write it
    event["comm"] = comm
    return event
