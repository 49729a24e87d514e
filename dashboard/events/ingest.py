"""Storing agents' batches of events: check, de-duplicate, bulk insert, then publish.

Idempotent by (node, seq): a batch resent after a reconnect stores nothing twice. Batches
that arrive together (from many agents) are stored together: one transaction, one insert
per table, one update of the nodes and one publish per feed for all of them, so the cost
of a batch falls as the number of agents rises (dashboard/fleet/consumers.py gathers them).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from dashboard.fleet.models import Container, Node
from dashboard.traffic.models import TrafficMinute

from . import bulk, feeds
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


@dataclass
class _Batch:
    """One agent's batch on its way in: its node, the events that fit the schema, its result,
    and the error that stopped it (then nothing of it was stored)."""

    node: Node
    good: list[dict]
    result: IngestResult
    error: Exception | None = None


def ingest_batch(node: Node, batch: list) -> IngestResult:
    """Store one agent's batch (as ingest_batches does); raise what stopped it."""
    [done] = _ingest([(node, batch)])
    if done.error:
        raise done.error
    return done.result


def ingest_batches(items: list[tuple[Node, list]]) -> list[IngestResult | Exception]:
    """Store several agents' batches, each as ingest_batch would, in order, in one transaction.
    Each batch's result, or the exception that kept it from being stored (the others are).
    If the group fails (another process stored some of these (node, seq) meanwhile: two
    dashboard processes, an agent that reconnected to the other; or one batch the database
    refuses), each batch is stored again on its own, so one agent's fault stays its own."""
    return [done.error or done.result for done in _ingest(items)]


def _ingest(items: list[tuple[Node, list]]) -> list[_Batch]:
    batches = [_checked(node, batch) for node, batch in items]
    todo = [b for b in batches if b.good]
    if len(todo) > 1:
        try:
            _store(todo)
            return batches
        except Exception as exc:  # noqa: BLE001 (one at a time below: each batch gets its own outcome)
            log.warning("ingest: a group of %d batches failed (%s: %s); storing them one by one", len(todo),
                        type(exc).__name__, str(exc)[:200])  # fmt: skip
    for b in todo:
        try:
            _store_alone(b)
        except Exception as exc:  # noqa: BLE001 (the caller answers this batch's agent with it)
            b.error = exc
    return batches


def _checked(node: Node, batch: list) -> _Batch:
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
    return _Batch(node, good, result)


def _store_alone(batch: _Batch) -> None:
    for attempt in range(INSERT_ATTEMPTS):
        try:
            return _store([batch])
        except IntegrityError:  # another worker stored some of these (node, seq) in between
            if attempt == INSERT_ATTEMPTS - 1:
                raise


def _known(node: Node, seqs: set[int]) -> set[int]:
    """Which of these numbers are stored already, in any event table (one sequence per agent)."""
    return {
        seq
        for model in (ConnectionEvent, ProcessEvent, TrafficMinute, Violation)
        for seq in model.objects.filter(node=node, seq__in=seqs).values_list("seq", flat=True)
    }


def _fresh(batches: list[_Batch]) -> list[list[dict]]:
    """Each batch's events not stored before (nor earlier in this call), counting the rest as
    duplicates. Only numbers up to a node's last stored one can be stored: it moves in the
    same transaction as the rows, and is read inside this one (on SQLite, under its write
    lock), so batches of new events, the usual ones, cost one query here in all."""
    last = dict(Node.objects.filter(pk__in={b.node.pk for b in batches}).values_list("pk", "last_seq"))
    taken: dict[int, set[int]] = {}
    out = []
    for b in batches:
        seen = taken.setdefault(b.node.pk, set())
        maybe = {e["seq"] for e in b.good if e["seq"] <= last[b.node.pk]} - seen
        known = _known(b.node, maybe) if maybe else set()
        fresh = []
        b.result.duplicates = 0  # (counted again when a raced store is retried)
        for event in b.good:
            if event["seq"] in known or event["seq"] in seen:
                b.result.duplicates += 1
            else:
                seen.add(event["seq"])
                fresh.append(event)
        out.append(fresh)
    return out


def _store(batches: list[_Batch]) -> None:
    rows, proc_rows, flagged, floods, tops = [], [], [], [], {}
    with transaction.atomic():
        fresh_of = _fresh(batches)
        containers = _containers([(b.node, fresh) for b, fresh in zip(batches, fresh_of, strict=True)])
        traffic = []
        for b, fresh in zip(batches, fresh_of, strict=True):
            node = b.node

            def box(e, node=node):
                return containers.get((node.pk, e["cgroup_path"]))

            conns = [e for e in fresh if e["kind"] == "connect"]
            procs = [e for e in fresh if e["kind"] not in ("connect", "traffic", "flood", "limit", "dns")]
            mine = [_traffic_row(node, e, box(e)) for e in fresh if e["kind"] == "traffic"]
            events = [_event_row(node, e, box(e)) for e in conns]
            processes = [_process_row(node, e, box(e)) for e in procs]
            # a scan's summed calls, and calls refused by its hold, raise none: the call that
            # reached the scan rule raised one for the scan
            flagged += [
                (_violation_row, ev, e)
                for ev, e in zip(events, conns, strict=True)
                if e["verdict"] != "allow" and ev.dest_port_hi is None and not e["held"]
            ]
            flagged += [(_process_violation, ev, e) for ev, e in zip(processes, procs, strict=True)
                        if e["verdict"] != "allow"]  # fmt: skip
            reports = [_flood_violation(node, e) for e in fresh if e["kind"] == "flood"]
            reports += [_limit_violation(node, e, box(e)) for e in fresh if e["kind"] == "limit"]
            reports += [_dns_violation(node, e, box(e)) for e in fresh if e["kind"] == "dns"]
            traffic += mine
            rows += events
            proc_rows += processes
            floods += reports
            b.result.stored = len(events) + len(processes) + len(mine) + len(reports)
            top = max(e["seq"] for e in b.good)
            tops[node.pk] = max(tops.get(node.pk, 0), top)
            b.result.processed_seq = max(b.result.processed_seq, top)
        bulk.insert(TrafficMinute, traffic)
        bulk.insert(ConnectionEvent, rows)
        bulk.insert(ProcessEvent, proc_rows)
        # (after their events: a violation names its event's id)
        flagged = [violation(ev, e) for violation, ev, e in flagged]
        violations = bulk.insert(Violation, flagged + floods)
        # each node's last stored number (never backwards) and last sight
        bulk.advance(Node, "last_seq", tops.items(), last_seen_at=timezone.now())
        # (robust: the rows are stored whatever befalls the feeds; Django logs what did)
        transaction.on_commit(lambda: _publish(rows, violations, proc_rows), robust=True)
    for b in batches:  # committed: the nodes' last numbers move on
        b.node.last_seq = b.result.last_seq = max(b.node.last_seq, tops[b.node.pk])


def _containers(batches: list[tuple[Node, list[dict]]]) -> dict[tuple[int, str], Container]:
    """Container rows for the batches' (node, cgroup path)s, created or refreshed in bulk."""
    wanted = {(node.pk, e["cgroup_path"]): (node, e) for node, events in batches for e in events if e.get("container")}
    if not wanted:
        return {}
    now = timezone.now()

    def stored() -> dict[tuple[int, str], Container]:
        rows = Container.objects.filter(node__in={pk for pk, _ in wanted}, cgroup_path__in={p for _, p in wanted})
        return {(c.node_id, c.cgroup_path): c for c in rows if (c.node_id, c.cgroup_path) in wanted}

    have = stored()
    new = [
        Container(
            node=node,
            cgroup_path=e["cgroup_path"],
            cgroup_id=e["cgroup_id"],
            runtime=e["container"]["runtime"],
            container_id=e["container"]["id"],
            name=e["container"]["name"],
            pod_uid=e["container"].get("pod_uid", ""),
            image=e["container"]["image"],
            labels=e["container"]["labels"],
            last_seen_at=now,
        )
        for key, (node, e) in wanted.items()
        if key not in have
    ]
    if new:
        Container.objects.bulk_create(new, ignore_conflicts=True)
        have = stored()
    changed = []
    for key, c in have.items():
        e = wanted[key][1]
        said = e["container"]
        if (c.name, c.image, c.labels) != (said["name"], said["image"], said["labels"]):
            c.name, c.image, c.labels = said["name"], said["image"], said["labels"]
            c.cgroup_id = e["cgroup_id"]
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


def _event_row(node: Node, e: dict, container: Container | None) -> SimpleNamespace:  # a ConnectionEvent row
    return bulk.row(
        ConnectionEvent,
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


def _traffic_row(node: Node, e: dict, container: Container | None) -> SimpleNamespace:  # a TrafficMinute row
    fields = {k: e[k] for k in ("seq", "cgroup_id", "cgroup_path", "family", "proto", "local_port", "remote_ip",
                                "remote_port", "bytes_in", "bytes_out", "payload_in", "payload_out", "packets_in",
                                "packets_out")}  # fmt: skip
    ts = dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC)
    return bulk.row(TrafficMinute, node=node, container=container, minute=e["ts_ns"] // 60_000_000_000, ts=ts, **fields)


def _process_row(node: Node, e: dict, container: Container | None) -> SimpleNamespace:  # a ProcessEvent row
    return bulk.row(
        ProcessEvent,
        **_common(node, e, container),
        kind=e["kind"],
        ppid=e["ppid"],
        start_ns=e["start_ns"],
        parent_comm=e["parent_comm"],
        parent_binary=e["parent_binary"],
        binary=e["binary"],
        given=e["given"],
        fileless=e["fileless"],
        sha256=e["sha256"],
        args=e["args"],
        cut=e["cut"],
        exit_code=e.get("exit_code"),
        lifetime_ns=e.get("lifetime_ns"),
        path=e.get("path", ""),
        access=",".join(e.get("access", ())),
        result=e.get("result") if e["kind"] in ("open", "socket") else None,
        enforced=e["enforced"],
    )


def _process_violation(ev: SimpleNamespace, e: dict) -> SimpleNamespace:  # a Violation row
    return bulk.row(
        Violation,
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


def _process_target(ev: SimpleNamespace) -> str:
    """What a process violation is about: the file opened, the call refused, the file that ran."""
    if ev.kind == "open":
        return f"{ev.path} ({ev.access})"
    if ev.kind == "call":
        return f"{ev.path}() refused"
    if ev.kind == "socket":
        return ev.path
    return (ev.binary or ev.comm) + (" (fileless)" if ev.fileless else "")


def _flood_violation(node: Node, e: dict) -> SimpleNamespace:  # a Violation row
    host = f"[{e['source_ip']}]" if ":" in e["source_ip"] else e["source_ip"]
    held = f"; dropped at XDP for {e['hold']} s" if e["enforced"] and e["hold"] else ""
    return bulk.row(
        Violation,
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


def _limit_violation(node: Node, e: dict, container: Container | None) -> SimpleNamespace:  # a Violation row
    held = "would have been held back" if e["audit"] else "held back"
    if e["what"] == "egress":
        target = f"egress held to {e['rate']:,} B/s: {e['held_bytes']:,} bytes ({e['held_packets']:,} packets) {held}"
    else:
        target = f"connections held to {e['rate']:,}/s: {e['refused']:,} calls refused" + (
            " (would have been)" if e["audit"] else ""
        )
    return bulk.row(
        Violation,
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


DNS_TARGETS = {
    "unsolicited": "DNS answer from {peer} that answers no query the container sent",
    "untrusted": "DNS answer from {peer}, a resolver this node does not trust",
    "forged": "DNS response sent as the trusted resolver {peer}",
}


def _dns_violation(node: Node, e: dict, container: Container | None) -> SimpleNamespace:  # a Violation row
    peer = f"[{e['peer']}]" if ":" in e["peer"] else e["peer"]
    what = DNS_TARGETS[e["reason"]].format(peer=f"{peer}:53")
    named = f" naming {e['name']}" if e["name"] else ""
    outcome = "dropped" if e["reason"] == "forged" else "taught nothing"
    many = f" ({e['count']:,} in {e['window_s']} s)" if e["count"] > 1 else ""
    return bulk.row(
        Violation,
        kind="dns",
        seq=e["seq"],
        target=f"{what}{named}: {outcome}{many}",
        node=node,
        container=container,
        ts=dt.datetime.fromtimestamp(e["ts_ns"] / 1e9, tz=dt.UTC),
        rule_id=e["rule_id"],
        action=e["verdict"],
        severity=e["severity"],
        enforced=e["enforced"],
        audit=False,
        op="",
        count=e["count"],
        comm="",
        pid=0,
        dest_ip=e["peer"],
        dest_port=53,
        dest_name=e["name"] or None,
    )


def _violation_row(ev: SimpleNamespace, e: dict) -> SimpleNamespace:  # a Violation row
    host = f"[{ev.dest_ip}]" if ":" in ev.dest_ip else ev.dest_ip
    target = f"{host}:{ev.dest_port}" + (f" ({ev.dest_name})" if ev.dest_name else "")
    if e.get("scan"):
        target = f"{e['scan']} new destinations within 1 s (reaching {target})"
    return bulk.row(
        Violation,
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


def _publish(events: list, violations: list, processes: list) -> None:
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
