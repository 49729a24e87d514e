"""Keeping the database bounded: events past RETENTION_DAYS are summed into per-minute
rollups (kept ROLLUP_DAYS) and deleted, a small batch per transaction, so ingest and page
loads wait at most one batch (SQLite has one writer), and after each batch the pruner
rests so that it works at most PRUNE_DUTY of the time: ingest keeps the database (and the
CPU) for itself the rest. Their violations go with them, and alert notifications delivered
before the same age; audit entries after AUDIT_DAYS. With a size bound (RETENTION_MB) the
oldest events go sooner, then the oldest rollups, whatever their age (measured as used_bytes
says)."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from dashboard.alerts.models import Notification
from dashboard.audit.models import AuditEntry
from dashboard.traffic.models import TrafficMinute

from .models import ConnectionEvent, ProcessEvent, Rollup, Violation

MINUTE_NS = 60 * 10**9
PER_MINUTE = (Rollup, TrafficMinute)  # sums per minute: kept ROLLUP_DAYS, the oldest day goes first for size
# Past this share of the size bound, prune down to the low-water share: the file peaks near
# the high-water mark plus what is written between two runs, and is not pruned an hour a run.
SIZE_HIGH_WATER, SIZE_LOW_WATER = 0.95, 0.85
PG_TUPLE_OVERHEAD = 8  # a row's line pointer and alignment, beyond what pg_column_size counts


@dataclass
class Pruned:
    events: dict[str, int] = field(default_factory=dict)  # table -> rows deleted
    violations: int = 0  # violations deleted with their events
    rolled_up: int = 0  # rollup rows written
    rollups: int = 0  # rollup rows deleted (past ROLLUP_DAYS)
    traffic: int = 0  # traffic minutes deleted (kept as long as rollups)
    notifications: int = 0  # alert notifications delivered or given up, past RETENTION_DAYS
    audit: int = 0  # audit entries past AUDIT_DAYS
    size_cutoff: dt.datetime | None = None  # events before this went to keep the size bound
    rollups_by_size: int = 0  # rollup rows deleted (the oldest days) to keep the size bound
    batches: int = 0


def prune(now: dt.datetime | None = None, *, days: int | None = None, rollup_days: int | None = None,
          max_bytes: int | None = None, batch: int | None = None, duty: float | None = None,
          progress=None) -> Pruned:  # fmt: skip
    """Roll up and delete events older than `days` (settings.RETENTION_DAYS; 0 keeps all),
    and rollups older than `rollup_days`; then, once the data takes 95 % of `max_bytes`
    (settings.RETENTION_MB; 0: no bound), down to 85 %: the oldest hour of events at a time,
    and once none are left the oldest day of rollups. `progress(table, deleted_so_far)`
    after each batch."""
    now = now or timezone.now()
    days = settings.RETENTION_DAYS if days is None else days
    rollup_days = settings.ROLLUP_DAYS if rollup_days is None else rollup_days
    max_bytes = settings.RETENTION_MB * 2**20 if max_bytes is None else max_bytes
    batch = batch or settings.PRUNE_BATCH
    duty = settings.PRUNE_DUTY if duty is None else duty
    done = Pruned()
    if days > 0:
        cutoff = now - dt.timedelta(days=days)
        _prune_events(cutoff, batch, duty, done, progress)
        delivered = Notification.objects.filter(created_at__lt=cutoff).exclude(state="queued")  # alerts sent
        while ids := list(delivered.values_list("pk", flat=True)[:batch]):
            done.notifications += Notification.objects.filter(pk__in=ids).delete()[0]
    if settings.AUDIT_DAYS > 0:
        old = AuditEntry.objects.filter(ts__lt=now - dt.timedelta(days=settings.AUDIT_DAYS))
        while ids := list(old.values_list("pk", flat=True)[:batch]):
            done.audit += AuditEntry.objects.filter(pk__in=ids).delete()[0]
    if rollup_days > 0:
        _prune_rollups(int((now - dt.timedelta(days=rollup_days)).timestamp()) // 60, batch, done)
    if max_bytes > 0 and (used_bytes() or 0) > max_bytes * SIZE_HIGH_WATER:
        _prune_to_size(int(max_bytes * SIZE_LOW_WATER), batch, duty, done, progress)
    return done


def _prune_events(cutoff: dt.datetime, batch: int, duty: float, done: Pruned, progress) -> None:
    for model in (ConnectionEvent, ProcessEvent):
        name = model._meta.model_name
        done.events.setdefault(name, 0)
        while True:
            started = time.monotonic()
            n = _prune_batch(model, cutoff, batch, done)
            if not n:
                break
            _checkpoint()
            done.events[name] += n
            done.batches += 1
            if progress:
                progress(name, done.events[name])
            if duty < 1:  # rest, so ingest has the writer lock and a core the rest of the time
                time.sleep((time.monotonic() - started) * (1 - duty) / max(duty, 0.01))


def _prune_rollups(before_minute: int, batch: int, done: Pruned) -> None:
    """Rollups and traffic minutes (both per-minute sums) from before `before_minute`."""
    while ids := list(Rollup.objects.filter(minute__lt=before_minute).values_list("pk", flat=True)[:batch]):
        done.rollups += Rollup.objects.filter(pk__in=ids).delete()[0]
    while ids := list(TrafficMinute.objects.filter(minute__lt=before_minute).values_list("pk", flat=True)[:batch]):
        done.traffic += TrafficMinute.objects.filter(pk__in=ids).delete()[0]


def _prune_to_size(target: int, batch: int, duty: float, done: Pruned, progress) -> None:
    """Oldest first, an hour of events (rolled up) or a day of rollups at a time, until the
    data takes at most `target` bytes."""
    while (used_bytes() or 0) > target:
        oldest = [t for t in (m.objects.order_by("ts").values_list("ts", flat=True).first()
                              for m in (ConnectionEvent, ProcessEvent)) if t is not None]  # fmt: skip
        if oldest:
            done.size_cutoff = min(oldest) + dt.timedelta(hours=1)
            _prune_events(done.size_cutoff, batch, duty, done, progress)
            continue
        firsts = [m.objects.order_by("minute").values_list("minute", flat=True).first() for m in PER_MINUTE]
        if not (firsts := [m for m in firsts if m is not None]):
            return  # nothing of ours left to remove: the rest is the dashboard's own tables
        minute = min(firsts)
        before = done.rollups
        _prune_rollups(minute + 24 * 60, batch, done)
        done.rollups_by_size += done.rollups - before
        _checkpoint()


# Per event table: the columns a rollup keeps of it, and its kind and target from them.
ROLLED = {
    ConnectionEvent: (("dest_ip", "dest_port"), lambda g: ("connect", _host_port(g["dest_ip"], g["dest_port"]))),
    ProcessEvent: (("kind", "path", "binary"), lambda g: (g["kind"], g["path"] or g["binary"])),
}
KEY = ("minute", "node_id", "container_id", "verdict", "rule_id")
VIOLATION_LINK = {ConnectionEvent: "event_id", ProcessEvent: "process_id"}  # Violation's column naming the row


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _prune_batch(model, cutoff: dt.datetime, batch: int, done: Pruned) -> int:
    with transaction.atomic():
        ids = list(model.objects.filter(ts__lt=cutoff).order_by("ts").values_list("pk", flat=True)[:batch])
        if not ids:
            return 0
        columns, kind_target = ROLLED[model]
        groups = model.objects.filter(pk__in=ids).values(*KEY, *columns).annotate(n=Sum("count")).order_by()
        rollups = []
        for g in groups:
            kind, target = kind_target(g)
            rollups.append(Rollup(**{k: g[k] for k in KEY}, kind=kind, target=target[:1024], count=g["n"]))
        Rollup.objects.bulk_create(rollups)
        done.rolled_up += len(rollups)
        # Their violations first (one query: nothing depends on a violation), then the rows
        # by id in one statement: the ORM's cascade would load every row as an object first.
        done.violations += Violation.objects.filter(**{f"{VIOLATION_LINK[model]}__in": ids}).delete()[0]
        with connection.cursor() as cur:
            marks = ", ".join(["%s"] * len(ids))
            cur.execute(f"DELETE FROM {model._meta.db_table} WHERE id IN ({marks})", ids)  # noqa: S608 (ids only)
        return len(ids)


def _checkpoint() -> None:
    """SQLite: copy the batch's WAL pages into the database now, in the pruner's time,
    rather than in whichever ingest commit next crosses the auto-checkpoint size."""
    if connection.vendor == "sqlite" and not connection.in_atomic_block:  # (a caller's transaction: its job)
        with connection.cursor() as cur:
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")


def database_bytes() -> int | None:
    """The database's size on disk (SQLite: the file and its WAL; PostgreSQL: as it reports)."""
    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        return sum(os.path.getsize(p) for p in (name, f"{name}-wal") if os.path.exists(p)) or None
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            return cur.fetchone()[0]
    return None


def used_bytes(counted: bool = True) -> int | None:
    """What the data takes, leaving out the space deletes freed for reuse (which database
    files keep): what the size bound measures.

    SQLite: the pages in use. PostgreSQL: its file sizes keep the space VACUUM freed and its
    live-row statistics lag behind deletes, so for the tables the pruner empties it is
    estimated from their rows: counted rows × the stored size of the newest rows (a sample,
    plus the tuple header) × (table and indexes) / table; the other tables as they are.
    counted=False takes the planner's row estimate instead of count(*) (a scan of each
    table): for pages and /metrics, never for the pruner, which needs its own deletes seen."""
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            sizes = []
            for pragma in ("page_count", "freelist_count", "page_size"):
                cur.execute(f"PRAGMA {pragma}")
                sizes.append(cur.fetchone()[0])
            return (sizes[0] - sizes[1]) * sizes[2]
        if connection.vendor != "postgresql":
            return None
        pruned = [m._meta.db_table for m in (ConnectionEvent, ProcessEvent, Violation, Rollup)]
        cur.execute("SELECT COALESCE(SUM(pg_total_relation_size(relid)), 0) FROM pg_stat_user_tables"
                    " WHERE NOT relname = ANY(%s)", [pruned])  # fmt: skip
        total = float(cur.fetchone()[0])
        for table in pruned:  # our own table names in the SQL, nothing from outside
            estimated = "(SELECT reltuples FROM pg_class WHERE oid = %(t)s::regclass)"
            count = f"(SELECT count(*) FROM {table})" if counted else estimated  # noqa: S608
            sample = f"(SELECT avg(pg_column_size(s.*)) FROM (SELECT * FROM {table} ORDER BY id DESC LIMIT 1000) s)"  # noqa: S608
            sizes = "pg_relation_size(%(t)s), pg_total_relation_size(%(t)s)"
            cur.execute(f"SELECT {count}, {sample}, {sizes}", {"t": table})
            rows, row_bytes, heap, whole = cur.fetchone()
            if rows and rows > 0 and heap:
                total += float(rows) * (float(row_bytes) + PG_TUPLE_OVERHEAD) * whole / heap
        return int(total)
