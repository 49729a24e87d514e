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
        "dest_port_hi": ev.dest_port_hi,
        "dest_name": ev.dest_name,
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
        "kind": v.kind,
        "event_id": v.event_id,
        "process_id": v.process_id,
        "target": v.target,
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
        "dest_name": v.dest_name,
    }


def process_row(p) -> dict:
    return {
        "id": p.pk,
        "kind": p.kind,
        "ts": p.ts.isoformat(),
        "node": p.node.name,
        "container": _container(p),
        "cgroup_path": p.cgroup_path,
        "pid": p.pid,
        "ppid": p.ppid,
        "uid": p.uid,
        "comm": p.comm,
        "parent_comm": p.parent_comm,
        "parent_binary": p.parent_binary,
        "binary": p.binary,
        "given": p.given,
        "fileless": p.fileless,
        "sha256": p.sha256,
        "args": p.args,
        "cut": p.cut,
        "exit": p.exit_text,
        "path": p.path,
        "access": p.access,
        "result": p.result_text,
        "lifetime_ms": p.lifetime_ms,
        "verdict": p.verdict,
        "rule_id": p.rule_id,
        "count": p.count,
        "unenforced": p.unenforced,
    }


def sources() -> dict:
    """Feed/search kind -> (model, row serialiser, the field that holds its verdict)."""
    from .models import ConnectionEvent, ProcessEvent, Violation

    return {
        "connections": (ConnectionEvent, connection_row, "verdict"),
        "processes": (ProcessEvent, process_row, "verdict"),
        "violations": (Violation, violation_row, "action"),
    }
