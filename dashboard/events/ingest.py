"""Storing a batch of agent events: check, de-duplicate, bulk insert, then publish.

Idempotent by (node, seq): a batch resent after a reconnect stores nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Greatest
from django.utils import timezone

from dashboard.fleet.models import Container, Node
from dashboard.traffic.models import TrafficMinute

from . import feeds
from .models import ConnectionEvent, ProcessEvent, Violation
from .schema import EventError, check_event
from .serializers import connection_row, process_row, violation_row

log = logging.getLogger(__name__)

INSERT_ATTEMPTS = 3  # a batch raced by another worker for the same node is checked again
SEEN_EVERY = dt.timedelta(seconds=5)  # a container's last_seen_at is at most this old while it sends


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    rejected: list = field(default_factory=list)  # [{"seq": .., "reason": ..}]
    last_seq: int = 0  # highest number stored for the node
    processed_seq: int = 0  # highest number in the batch, stored or rejected: what the ack covers


def ingest_batch(node: Node, batch: list) -> IngestResult:
    result = IngestResult(last_seq=node.last_seq)
    numbered = [e["seq"] for e in batch if isinstance(e, dict) and type(e.get("seq")) is int]
    result.processed_seq = max([node.last_seq, *numbered])
    good = []
    for index, raw in enumerate(batch):
        try:
            good.append(check_event(raw))
        except EventError as exc:
            seq = raw.get("seq") if isinstance(raw, dict) else None
            result.rejected.append({"index": index, "seq": seq if isinstance(seq, int) else None, "reason": str(exc)})
    if not good:
        return result
    for attempt in range(INSERT_ATTEMPTS):
        try:
            return _store(node, good, result)
        except IntegrityError:  # another worker stored some of these (node, seq) in between
            if attempt == INSERT_ATTEMPTS - 1:
                raise
            node.refresh_from_db(fields=["last_seq"])
            result.duplicates = 0
    raise AssertionError("unreachable")


def _known(node: Node, seqs: set[int]) -> set[int]:
    """The numbers already stored, in any event table (one sequence per agent). Only numbers
    up to the node's last stored one can be: it moves in the same transaction as the rows,
    and is read inside this one (on SQLite, under its write lock), so a batch of new events,
    the usual one, costs one query here, not one per table."""
    last = Node.objects.filter(pk=node.pk).values_list("last_seq", flat=True).get()
    seqs = {seq for seq in seqs if seq <= last}
    if not seqs:
        return set()
    return {
        seq
        for model in (ConnectionEvent, ProcessEvent, TrafficMinute, Violation)
        for seq in model.objects.filter(node=node, seq__in=seqs).values_list("seq", flat=True)
    }


def _store(node: Node, good: list[dict], result: IngestResult) -> IngestResult:
    with transaction.atomic():
        seqs = {e["seq"] for e in good}
        known = _known(node, seqs)
        fresh, seen = [], set()
        for event in good:
            if event["seq"] in known or event["seq"] in seen:
                result.duplicates += 1
            else:
                seen.add(event["seq"])
                fresh.append(event)
        containers = _containers(node, fresh)
        conns = [e for e in fresh if e["kind"] == "connect"]
        procs = [e for e in fresh if e["kind"] not in ("connect", "traffic", "flood", "limit")]
        traffic = [_traffic_row(node, e, containers.get(e["cgroup_path"])) for e in fresh if e["kind"] == "traffic"]
        TrafficMinute.objects.bulk_create(traffic)
        rows = [_event_row(node, e, containers.get(e["cgroup_path"])) for e in conns]
        ConnectionEvent.objects.bulk_create(rows)
        proc_rows = [_process_row(node, e, containers.get(e["cgroup_path"])) for e in procs]
        ProcessEvent.objects.bulk_create(proc_rows)
        # a scan's summed calls, and calls refused by its hold, raise none: the call that reached
        # the scan rule raised one for the scan
        flagged = [
            _violation_row(ev, e)
            for ev, e in zip(rows, conns, strict=True)
            if e["verdict"] != "allow" and ev.dest_port_hi is None and not e["held"]
        ]
        flagged += [
            _process_violation(ev, e) for ev, e in zip(proc_rows, procs, strict=True) if e["verdict"] != "allow"
        ]
        floods = [_flood_violation(node, e) for e in fresh if e["kind"] == "flood"]
        floods += [_limit_violation(node, e, containers.get(e["cgroup_path"])) for e in fresh if e["kind"] == "limit"]
        violations = Violation.objects.bulk_create(flagged + floods)
        result.stored = len(rows) + len(proc_rows) + len(traffic) + len(floods)
        top = max(seqs)
        Node.objects.filter(pk=node.pk).update(last_seq=Greatest("last_seq", top), last_seen_at=timezone.now())
        node.last_seq = result.last_seq = max(node.last_seq, top)
        result.processed_seq = max(result.processed_seq, top)
        transaction.on_commit(lambda: _publish(rows, violations, proc_rows))
    return result


def _containers(node: Node, events: list[dict]) -> dict[str, Container]:
    """Container rows for the batch's cgroup paths, created or refreshed in bulk."""
    wanted = {e["cgroup_path"]: e for e in events if e.get("container")}
    if not wanted:
        return {}
    now = timezone.now()
    have = {c.cgroup_path: c for c in Container.objects.filter(node=node, cgroup_path__in=list(wanted))}
    new = [
        Container(
            node=node,
            cgroup_path=path,
            cgroup_id=e["cgroup_id"],
            runtime=e["container"]["runtime"],
            container_id=e["container"]["id"],
            name=e["container"]["name"],
            pod_uid=e["container"].get("pod_uid", ""),
            image=e["container"]["image"],
            labels=e["container"]["labels"],
            last_seen_at=now,
        )
        for path, e in wanted.items()
        if path not in have
    ]
    if new:
        Container.objects.bulk_create(new, ignore_conflicts=True)
        have = {c.cgroup_path: c for c in Container.objects.filter(node=node, cgroup_path__in=list(wanted))}
    changed = []
    for path, c in have.items():
        said = wanted[path]["container"]
        if (c.name, c.image, c.labels) != (said["name"], said["image"], said["labels"]):
            c.name, c.image, c.labels = said["name"], said["image"], said["labels"]
            c.cgroup_id = wanted[path]["cgroup_id"]
            changed.append(c)
    if changed:
        Container.objects.bulk_update(changed, ["name", "image", "labels", "cgroup_id"])
    stale = [c.pk for c in have.values() if c.last_seen_at < now - SEEN_EVERY]
    if stale:  # (not a write per batch: a busy container's batches come several a second)
        Container.objects.filter(pk__in=stale).update(last_seen_at=now)
    return have


def _common(node: Node, e: dict, container: Container | None) -> dict:
    """The columns every event table has."""
    return {
        "node": node,
        "seq": e["seq"],
        "ts": dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC),
        "minute": e["ts_ns"] // 60_000_000_000,
        "count": e["count"],
        "container": container,
        "cgroup_id": e["cgroup_id"],
        "cgroup_path": e["cgroup_path"],
        "pid": e["pid"],
        "uid": e["uid"],
        "gid": e["gid"],
        "comm": e["comm"],
        "verdict": e["verdict"],
        "rule_id": e["rule_id"],
        "policy_version": e["policy_version"],
        "unenforced": e["unenforced"],
    }


def _event_row(node: Node, e: dict, container: Container | None) -> ConnectionEvent:
    return ConnectionEvent(
        **_common(node, e, container),
        tid=e["tid"],
        family=e["family"],
        dest_ip=e["dest_ip"],
        dest_port=e["dest_port"],
        dest_name=e["dest_name"],
        dest_port_hi=e.get("dest_port_hi"),
        result=e["result"],
        op=e["op"],
    )


def _traffic_row(node: Node, e: dict, container: Container | None) -> TrafficMinute:
    fields = {k: e[k] for k in ("seq", "cgroup_id", "cgroup_path", "family", "proto", "local_port", "remote_ip",
                                "remote_port", "bytes_in", "bytes_out", "payload_in", "payload_out", "packets_in",
                                "packets_out")}  # fmt: skip
    ts = dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC)
    return TrafficMinute(node=node, container=container, minute=e["ts_ns"] // 60_000_000_000, ts=ts, **fields)


def _process_row(node: Node, e: dict, container: Container | None) -> ProcessEvent:
    return ProcessEvent(
        **_common(node, e, container),
        kind=e["kind"],
        ppid=e["ppid"],
        start_ns=e["start_ns"],
        parent_comm=e["parent_comm"],
        parent_binary=e["parent_binary"],
        binary=e["binary"],
        given=e["given"],
        fileless=e["fileless"],
        args=e["args"],
        cut=e["cut"],
        exit_code=e.get("exit_code"),
        lifetime_ns=e.get("lifetime_ns"),
        path=e.get("path", ""),
        access=",".join(e.get("access", ())),
        result=e.get("result") if e["kind"] == "open" else None,
        enforced=e["enforced"],
    )


def _process_violation(ev: ProcessEvent, e: dict) -> Violation:
    return Violation(
        kind=ev.kind,
        process=ev,
        target=_process_target(ev),
        node=ev.node,
        container=ev.container,
        ts=ev.ts,
        rule_id=ev.rule_id,
        action=ev.verdict,
        severity=e["severity"],
        enforced=e["enforced"],
        audit=e["audit"],
        unenforced=e["unenforced"],
        op="",
        count=ev.count,
        comm=ev.comm,
        pid=ev.pid,
    )


def _process_target(ev: ProcessEvent) -> str:
    """What a process violation is about: the file opened, the call refused, the file that ran."""
    if ev.kind == "open":
        return f"{ev.path} ({ev.access})"
    if ev.kind == "call":
        return f"{ev.path}() refused"
    return (ev.binary or ev.comm) + (" (fileless)" if ev.fileless else "")


def _flood_violation(node: Node, e: dict) -> Violation:
    host = f"[{e['source_ip']}]" if ":" in e["source_ip"] else e["source_ip"]
    held = f"; dropped at XDP for {e['hold']} s" if e["enforced"] and e["hold"] else ""
    return Violation(
        kind="flood",
        seq=e["seq"],
        target=f"{host} sent {e['syns']} TCP SYNs within 1 s (to port {e['dest_port']}){held}",
        node=node,
        ts=dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC),
        rule_id=e["rule_id"],
        action=e["verdict"],
        severity=e["severity"],
        enforced=e["enforced"],
        audit=e["audit"],
        op="",
        comm="",
        pid=0,
    )


def _limit_violation(node: Node, e: dict, container: Container | None) -> Violation:
    held = "would have been held back" if e["audit"] else "held back"
    if e["what"] == "egress":
        target = f"egress held to {e['rate']:,} B/s: {e['held_bytes']:,} bytes ({e['held_packets']:,} packets) {held}"
    else:
        target = f"connections held to {e['rate']:,}/s: {e['refused']:,} calls refused" + (
            " (would have been)" if e["audit"] else ""
        )
    return Violation(
        kind="limit",
        seq=e["seq"],
        target=f"{target} in {e['window_s']} s",
        node=node,
        container=container,
        ts=dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC),
        rule_id=e["rule_id"],
        action="deny",
        severity=e["severity"],
        enforced=e["enforced"],
        audit=e["audit"],
        op="",
        count=e["refused"] or 1,
        comm="",
        pid=0,
    )


def _violation_row(ev: ConnectionEvent, e: dict) -> Violation:
    host = f"[{ev.dest_ip}]" if ":" in ev.dest_ip else ev.dest_ip
    target = f"{host}:{ev.dest_port}" + (f" ({ev.dest_name})" if ev.dest_name else "")
    if e.get("scan"):
        target = f"{e['scan']} new destinations within 1 s (reaching {target})"
    return Violation(
        kind="scan" if e.get("scan") else "connect",
        target=target,
        event=ev,
        node=ev.node,
        container=ev.container,
        ts=ev.ts,
        rule_id=ev.rule_id,
        action=ev.verdict,
        severity=e["severity"],
        enforced=e["enforced"],
        audit=e["audit"],
        unenforced=e["unenforced"],
        op=ev.op,
        count=ev.count,
        comm=ev.comm,
        pid=ev.pid,
        dest_ip=ev.dest_ip,
        dest_port=ev.dest_port,
        dest_name=ev.dest_name,
    )


def _publish(events: list[ConnectionEvent], violations: list[Violation], processes: list[ProcessEvent]) -> None:
    """Rows go out oldest first; the page puts each new one on top."""
    first = (events or processes or [None])[0]
    took = (timezone.now() - first.received_at).total_seconds() if first else 0
    if took > settings.FEED_SETTLE:
        log.warning(
            "ingest: %d rows committed %.0f s after their ids were taken (over FEED_SETTLE=%d s):"
            " a feed that reconnected meanwhile may not show them; Search does",
            len(events) + len(processes),
            took,
            settings.FEED_SETTLE,
        )
    feeds.publish("connections", [connection_row(e) for e in events])
    feeds.publish("processes", [process_row(p) for p in processes])
    feeds.publish("violations", [violation_row(v) for v in violations])
