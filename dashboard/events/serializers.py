"""One JSON shape per row kind, shared by the API, the live feeds and their backfill."""

from __future__ import annotations


def _container(row) -> dict | None:
    c = row.container
    return {"id": c.pk, "name": c.name, "container_id": c.container_id[:12], "runtime": c.runtime} if c else None


def connection_row(ev) -> dict:
    return {
        "id": ev.pk,
        "ts": ev.ts.isoformat(),
        "node": ev.node.name,
        "container": _container(ev),
        "cgroup_path": ev.cgroup_path,
        "pid": ev.pid,
        "uid": ev.uid,
        "comm": ev.comm,
        "dest_ip": ev.dest_ip,
        "dest_port": ev.dest_port,
        "result": ev.result,
        "verdict": ev.verdict,
        "rule_id": ev.rule_id,
        "count": ev.count,
        "op": ev.op,
        "unenforced": ev.unenforced,
    }


def violation_row(v) -> dict:
    return {
        "id": v.pk,
        "event_id": v.event_id,
        "ts": v.ts.isoformat(),
        "node": v.node.name,
        "container": _container(v),
        "rule_id": v.rule_id,
        "action": v.action,
        "severity": v.severity,
        "enforced": v.enforced,
        "audit": v.audit,
        "unenforced": v.unenforced,
        "op": v.op,
        "count": v.count,
        "pid": v.pid,
        "comm": v.comm,
        "dest_ip": v.dest_ip,
        "dest_port": v.dest_port,
    }


def sources() -> dict:
    """Feed/search kind -> (model, row serialiser, the field that holds its verdict)."""
    from .models import ConnectionEvent, Violation

    return {
        "connections": (ConnectionEvent, connection_row, "verdict"),
        "violations": (Violation, violation_row, "action"),
    }
