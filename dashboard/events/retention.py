"""Keeping the database bounded: events past RETENTION_DAYS are summed into per-minute
rollups (kept ROLLUP_DAYS) and deleted, a small batch per transaction, so ingest and page
loads wait at most one batch (SQLite has one writer). Their violations go with them."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from .models import ConnectionEvent, ProcessEvent, Rollup

MINUTE_NS = 60 * 10**9


@dataclass
class Pruned:
    events: dict[str, int] = field(default_factory=dict)  # table -> rows deleted
    rolled_up: int = 0  # rollup rows written
    rollups: int = 0  # rollup rows deleted (past ROLLUP_DAYS)
    batches: int = 0


def prune(now: dt.datetime | None = None, *, days: int | None = None, rollup_days: int | None = None,
          batch: int | None = None, pause: float = 0.05, progress=None) -> Pruned:  # fmt: skip
    """Roll up and delete events older than `days` (settings.RETENTION_DAYS; 0 keeps all),
    and rollups older than `rollup_days`. `progress(table, deleted_so_far)` after each batch."""
    now = now or timezone.now()
    days = settings.RETENTION_DAYS if days is None else days
    rollup_days = settings.ROLLUP_DAYS if rollup_days is None else rollup_days
    batch = batch or settings.PRUNE_BATCH
    done = Pruned()
    if days > 0:
        cutoff = now - dt.timedelta(days=days)
        for model in (ConnectionEvent, ProcessEvent):
            name = model._meta.model_name
            done.events[name] = 0
            while n := _prune_batch(model, cutoff, batch, done):
                done.events[name] += n
                done.batches += 1
                if progress:
                    progress(name, done.events[name])
                time.sleep(pause)  # let a waiting ingest in
    if rollup_days > 0:
        oldest = int((now - dt.timedelta(days=rollup_days)).timestamp()) // 60
        while ids := list(Rollup.objects.filter(minute__lt=oldest).values_list("pk", flat=True)[:batch]):
            done.rollups += Rollup.objects.filter(pk__in=ids).delete()[0]
    return done


# Per event table: the columns a rollup keeps of it, and its kind and target from them.
ROLLED = {
    ConnectionEvent: (("dest_ip", "dest_port"), lambda g: ("connect", _host_port(g["dest_ip"], g["dest_port"]))),
    ProcessEvent: (("kind", "path", "binary"), lambda g: (g["kind"], g["path"] or g["binary"])),
}
KEY = ("minute", "node_id", "container_id", "verdict", "rule_id")


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
        model.objects.filter(pk__in=ids).delete()  # their violations cascade
        return len(ids)


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
