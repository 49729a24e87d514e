"""Storing a batch of agent events: check, de-duplicate, bulk insert, then publish.

Idempotent by (node, seq): a batch resent after a reconnect stores nothing twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models.functions import Greatest
from django.utils import timezone

from dashboard.fleet.models import Container, Node

from . import feeds
from .models import ConnectionEvent, Violation
from .schema import EventError, check_event
from .serializers import connection_row, violation_row

INSERT_ATTEMPTS = 3  # a batch raced by another worker for the same node is checked again


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
    return set(ConnectionEvent.objects.filter(node=node, seq__in=seqs).values_list("seq", flat=True))


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
        rows = [_event_row(node, e, containers.get(e["cgroup_path"])) for e in fresh]
        ConnectionEvent.objects.bulk_create(rows)
        violations = Violation.objects.bulk_create(
            [_violation_row(ev, e) for ev, e in zip(rows, fresh, strict=True) if e["verdict"] != "allow"]
        )
        result.stored = len(rows)
        top = max(seqs)
        Node.objects.filter(pk=node.pk).update(last_seq=Greatest("last_seq", top), last_seen_at=timezone.now())
        node.last_seq = result.last_seq = max(node.last_seq, top)
        result.processed_seq = max(result.processed_seq, top)
        transaction.on_commit(lambda: _publish(rows, violations))
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
    Container.objects.filter(pk__in=[c.pk for c in have.values()]).update(last_seen_at=now)
    return have


def _event_row(node: Node, e: dict, container: Container | None) -> ConnectionEvent:
    return ConnectionEvent(
        node=node,
        seq=e["seq"],
        ts=dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC),
        minute=e["ts_ns"] // 60_000_000_000,
        count=e["count"],
        container=container,
        cgroup_id=e["cgroup_id"],
        cgroup_path=e["cgroup_path"],
        pid=e["pid"],
        tid=e["tid"],
        uid=e["uid"],
        gid=e["gid"],
        comm=e["comm"],
        family=e["family"],
        dest_ip=e["dest_ip"],
        dest_port=e["dest_port"],
        result=e["result"],
        verdict=e["verdict"],
        rule_id=e["rule_id"],
        policy_version=e["policy_version"],
        op=e["op"],
        unenforced=e["unenforced"],
    )


def _violation_row(ev: ConnectionEvent, e: dict) -> Violation:
    return Violation(
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
    )


def _publish(events: list[ConnectionEvent], violations: list[Violation]) -> None:
    """Rows go out oldest first; the page puts each new one on top."""
    feeds.publish("connections", [connection_row(e) for e in events])
    feeds.publish("violations", [violation_row(v) for v in violations])
