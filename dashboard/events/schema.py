"""The shape of one event in an agent's batch. An event that does not fit is rejected
with a reason; the rest of its batch is still stored."""

from __future__ import annotations

import ipaddress
import re

INT64 = (0, (1 << 63) - 1)
FIELDS = {
    # every kind: name -> (type, (min, max) for numbers / max length for strings)
    "seq": (int, (1, INT64[1])),
    "ts_ns": (int, (0, INT64[1])),
    "pid": (int, (0, (1 << 31) - 1)),
    "tid": (int, (0, (1 << 31) - 1)),
    "uid": (int, (0, (1 << 32) - 1)),
    "gid": (int, (0, (1 << 32) - 1)),
    "cgroup_id": (int, INT64),
    "policy_version": (int, (0, (1 << 31) - 1)),
    "comm": (str, 64),
    "cgroup_path": (str, 1024),
    "verdict": (str, 5),
    "rule_id": (str, 64),
    "severity": (str, 10),
}
KIND_FIELDS = {
    "connect": {
        "family": (int, (4, 6)),
        "dest_port": (int, (0, 65535)),
        "result": (int, (-4095, 0)),  # null: not known (the kernel observer sees calls before they run)
        "dest_ip": (str, 45),
    },
    "exec": {
        "ppid": (int, (0, (1 << 31) - 1)),
        "start_ns": (int, INT64),
        "parent_comm": (str, 64),
        "parent_binary": (str, 1024),
        "binary": (str, 1024),
    },
}
KIND_FIELDS["exit"] = KIND_FIELDS["exec"] | {
    "exit_code": (int, (-(1 << 31), (1 << 31) - 1)),
    "lifetime_ns": (int, INT64),
}
KIND_FIELDS["open"] = KIND_FIELDS["exec"] | {
    "path": (str, 1024),
    "result": (int, (-4095, (1 << 31) - 1)),  # a file descriptor, or -errno
}
KIND_FIELDS["call"] = KIND_FIELDS["exec"] | {"path": (str, 64)}  # a call refused to keep an open deny whole
KIND_FIELDS["socket"] = KIND_FIELDS["exec"] | {  # a raw, packet, ping or SCTP socket made
    "path": (str, 160),  # what it is: "raw socket (IPv4, raw, protocol 1)", "unix socket /run/x.sock (stream)"
    "result": (int, (-4095, 0)),  # 0, or -errno (refused)
}
ACCESSES = ("read", "write", "create", "truncate")
KINDS = tuple(KIND_FIELDS)
# An agent before process events sent its backend's name as `kind`: those are connections.
SOURCES = ("kernel", "aggregate", "connect")
NULLABLE = ("result", "exit_code", "lifetime_ns")
FLAGS = ("enforced", "audit")  # optional booleans: the kernel's part in a deny
# held: refused by a scan rule's hold (the scan's own violation reports it; no violation each)
MAX_ARGS, MAX_ARGS_CHARS = 64, 1024
CONTAINER_FIELDS = {"runtime": 20, "id": 64, "name": 255, "pod_uid": 64}
OPTIONAL_CONTAINER_FIELDS = {"image": 255}
MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 64, 128, 256
VERDICTS = ("allow", "alert", "deny")
OPS = ("connect", "sendmsg", "packet")
MAX_UNENFORCED = 200
MAX_NAME = 255  # a DNS name's text form


TRAFFIC_FIELDS = {
    "seq": (int, (1, INT64[1])),
    "ts_ns": (int, (0, INT64[1])),
    "cgroup_id": (int, INT64),
    "cgroup_path": (str, 1024),
    "family": (int, (4, 6)),
    "proto": (str, 8),
    "local_port": (int, (0, 65535)),
    "remote_ip": (str, 45),
    "remote_port": (int, (0, 65535)),
    **{
        name: (int, INT64)
        for name in ("bytes_in", "bytes_out", "payload_in", "payload_out", "packets_in", "packets_out")
    },  # fmt: skip
}


FLOOD_FIELDS = {
    "seq": (int, (1, INT64[1])),
    "ts_ns": (int, (0, INT64[1])),
    "source_ip": (str, 45),
    "family": (int, (4, 6)),
    "dest_port": (int, (0, 65535)),
    "syns": (int, (1, 1 << 32)),
    "rule_id": (str, 64),
    "verdict": (str, 5),
    "severity": (str, 10),
    "policy_version": (int, (0, (1 << 31) - 1)),
}


DNS_REASONS = ("unsolicited", "untrusted", "forged")
DNS_FIELDS = {
    "seq": (int, (1, INT64[1])),
    "ts_ns": (int, (0, INT64[1])),
    "cgroup_id": (int, INT64),
    "cgroup_path": (str, 1024),
    "rule_id": (str, 64),
    "verdict": (str, 5),
    "severity": (str, 10),
    "reason": (str, 12),
    "peer": (str, 45),
    "family": (int, (4, 6)),
    "name": (str, MAX_NAME),
    "count": (int, (1, 1_000_000_000)),
    "window_s": (int, (0, 1 << 31)),
    "policy_version": (int, (0, (1 << 31) - 1)),
}

LIMIT_FIELDS = {
    "seq": (int, (1, INT64[1])),
    "ts_ns": (int, (0, INT64[1])),
    "cgroup_id": (int, INT64),
    "cgroup_path": (str, 1024),
    "rule_id": (str, 64),
    "verdict": (str, 5),
    "severity": (str, 10),
    "what": (str, 12),
    "rate": (int, (1, INT64[1])),
    "held_bytes": (int, INT64),
    "held_packets": (int, INT64),
    "refused": (int, INT64),
    "window_s": (int, (0, 1 << 31)),
    "policy_version": (int, (0, (1 << 31) - 1)),
}


class EventError(ValueError):
    pass


def _check_address(event: dict, name: str) -> None:
    """An IP address of the event's `family`."""
    try:
        addr = ipaddress.ip_address(event[name])
    except ValueError:
        raise EventError(f"{name}: not an IP address") from None
    if addr.version != event["family"]:
        raise EventError(f"{name}: does not match family")


def _check_flags(event: dict) -> None:
    for name in FLAGS:
        if not isinstance(event.setdefault(name, False), bool):
            raise EventError(f"{name}: must be true or false")


def _check_fields(event: dict, fields: dict) -> None:
    for name, (kind, limit) in fields.items():
        value = event.get(name)
        if value is None and name in NULLABLE and name in event:
            continue
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not limit[0] <= value <= limit[1]:
                raise EventError(f"{name}: must be an integer in {limit[0]}..{limit[1]}")
        elif not isinstance(value, str) or len(value) > limit:
            raise EventError(f"{name}: must be a string of at most {limit} characters")


def check_event(event) -> dict:
    """Return the event if it fits the schema, else raise EventError naming the field.
    `kind` says which fields follow (connect: a destination; exec/exit: a process)."""
    if not isinstance(event, dict):
        raise EventError("event must be an object")
    kind = event.get("kind")
    if kind == "traffic":
        return _check_traffic(event)
    if kind == "flood":
        return _check_flood(event)
    if kind == "limit":
        return _check_limit(event)
    if kind == "dns":
        return _check_dns(event)
    if kind in SOURCES or kind is None:
        kind = event["kind"] = "connect"
    if kind not in KINDS:
        raise EventError(f"kind: must be one of {', '.join(KINDS)}")
    _check_fields(event, FIELDS)
    _check_fields(event, KIND_FIELDS[kind])
    count = event.setdefault("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000_000:
        raise EventError("count: must be an integer in 1..1000000000")
    _check_flags(event)
    if event["verdict"] not in VERDICTS:
        raise EventError(f"verdict: must be one of {', '.join(VERDICTS)}")
    unenforced = event.setdefault("unenforced", "")
    if not isinstance(unenforced, str) or len(unenforced) > MAX_UNENFORCED:
        raise EventError(f"unenforced: must be a string of at most {MAX_UNENFORCED} characters")
    if unenforced and (event["verdict"] != "deny" or event["enforced"]):
        raise EventError("unenforced: only for a deny the kernel did not apply")
    if event["verdict"] != "allow" and not event["rule_id"]:
        raise EventError("rule_id: required when the verdict is not allow")
    if kind == "connect":
        _check_connect(event)
    else:
        if kind == "open":
            access = event.get("access")
            if not isinstance(access, list) or not access or any(a not in ACCESSES for a in access):
                raise EventError(f"access: must be a list of {', '.join(ACCESSES)}")
        args = event.setdefault("args", [])
        if not isinstance(args, list) or len(args) > MAX_ARGS or not all(isinstance(a, str) for a in args):
            raise EventError(f"args: must be a list of at most {MAX_ARGS} strings")
        if sum(len(a) for a in args) > MAX_ARGS_CHARS:
            raise EventError(f"args: at most {MAX_ARGS_CHARS} characters in all")
        if not isinstance(event.setdefault("cut", False), bool):
            raise EventError("cut: must be true or false")
        if not isinstance(event.setdefault("fileless", False), bool):
            raise EventError("fileless: must be true or false")
        given = event.setdefault("given", "")
        if not isinstance(given, str) or len(given) > 1024:
            raise EventError("given: must be a string of at most 1024 characters")
        digest = event.setdefault("sha256", "")
        if not isinstance(digest, str) or (digest and not re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise EventError("sha256: must be 64 lower-case hex digits, or empty")
    _check_container(event)
    return event


def _check_traffic(event: dict) -> dict:
    """A minute of one flow's traffic (monitor/traffic.py)."""
    _check_fields(event, TRAFFIC_FIELDS)
    _check_address(event, "remote_ip")
    _check_container(event)
    return event


def _check_flood(event: dict) -> dict:
    """A source's SYNs that reached a flood rule at a node's XDP interfaces."""
    _check_fields(event, FLOOD_FIELDS)
    _check_address(event, "source_ip")
    if event["verdict"] not in ("alert", "deny") or not event["rule_id"]:
        raise EventError("verdict: a flood report alerts or denies, by a rule")
    _check_flags(event)
    hold = event.setdefault("hold", None)
    if hold is not None and (isinstance(hold, bool) or not isinstance(hold, int) or not 0 < hold <= 86_400):
        raise EventError("hold: seconds the source is dropped (1..86400), or null")
    return event


def _check_limit(event: dict) -> dict:
    """What a container's rate limit held back over a window."""
    _check_fields(event, LIMIT_FIELDS)
    if event["what"] not in ("egress", "connections") or event["verdict"] != "deny" or not event["rule_id"]:
        raise EventError("what: egress or connections, held back by a deny rule")
    if not (event["held_bytes"] if event["what"] == "egress" else event["refused"]):
        raise EventError("a limit report holds what was held back")
    _check_flags(event)
    _check_container(event)
    return event


def _check_dns(event: dict) -> dict:
    """DNS answers a container got that the kernel learned nothing from, or responses it
    dropped because the container sent them as a trusted resolver (monitor.dns)."""
    _check_fields(event, DNS_FIELDS)
    _check_address(event, "peer")
    reason, verdict = event["reason"], event["verdict"]
    if reason not in DNS_REASONS or verdict != ("deny" if reason == "forged" else "alert") or not event["rule_id"]:
        raise EventError(f"reason: one of {', '.join(DNS_REASONS)} (forged: deny, the rest: alert)")
    _check_flags(event)
    _check_container(event)
    return event


def _check_connect(event: dict) -> None:
    if event.setdefault("op", "connect") not in OPS:
        raise EventError(f"op: must be one of {', '.join(OPS)}")
    _check_address(event, "dest_ip")
    hi = event.get("dest_port_hi")  # a scan summed in the kernel: its port range
    if hi is not None and (isinstance(hi, bool) or not isinstance(hi, int) or not event["dest_port"] <= hi <= 65535):
        raise EventError("dest_port_hi: must be a port from dest_port to 65535 (a scan's range), or absent")
    scan = event.get("scan")  # the call that reached a scan rule's threshold: the new destinations counted
    if scan is not None and (isinstance(scan, bool) or not isinstance(scan, int) or not 1 <= scan <= 1 << 32):
        raise EventError("scan: must be a positive count of new destinations, or absent")
    held = event.setdefault("held", False)
    if not isinstance(held, bool) or (held and (event["verdict"] != "deny" or event.get("scan"))):
        raise EventError("held: true only for a call refused by a scan rule's hold or a rate limit")
    if event.get("scan") and event["verdict"] == "allow":
        raise EventError("scan: a scan rule's crossing alerts or denies")
    name = event.setdefault("dest_name", None)  # "": never resolved; null: not known (older agents)
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise EventError(f"dest_name: must be a string of at most {MAX_NAME} characters, or null")


def _check_container(event: dict) -> None:
    container = event.get("container")
    if container is not None:
        if not isinstance(container, dict):
            raise EventError("container: must be an object or null")
        for name, limit in CONTAINER_FIELDS.items():
            value = container.get(name)
            if not isinstance(value, str) or len(value) > limit or (name != "pod_uid" and not value):
                raise EventError(f"container.{name}: must be a string of at most {limit} characters")
        for name, limit in OPTIONAL_CONTAINER_FIELDS.items():
            value = container.setdefault(name, "")
            if not isinstance(value, str) or len(value) > limit:
                raise EventError(f"container.{name}: must be a string of at most {limit} characters")
        labels = container.setdefault("labels", {})
        if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
            raise EventError(f"container.labels: must be an object of at most {MAX_LABELS} entries")
        for key, value in labels.items():
            if len(key) > MAX_LABEL_KEY or not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
                raise EventError(
                    f"container.labels: keys of at most {MAX_LABEL_KEY} and string values of at most "
                    f"{MAX_LABEL_VALUE} characters"
                )
        if not event["cgroup_path"]:
            raise EventError("cgroup_path: required for a container")
