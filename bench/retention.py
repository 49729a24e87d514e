"""Retention under load: does pruning slow ingest down?

    .venv/bin/python -m bench.retention [--old 300000] [--rounds 3] [--seconds 5] [--batch 100]

A fresh SQLite database (as `make run` uses) is seeded with --old connections past their
retention (8-9 days old). Ingest (dashboard.events.ingest.ingest_batch, batches of --batch
events, as the agent consumer calls it) then runs for --seconds per arm, the arms
interleaved over --rounds: without pruning, and with `manage.py prune` deleting the old
rows in another process at the same time (its default batch and pause). Prints ingest
events/s per arm and the median ratio (target >= 0.95), and how many rows the pruner
removed while ingest ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .alone import alone

ROOT = Path(__file__).resolve().parents[1]


def setup(var: Path) -> None:
    os.environ["CROSSEDGE_VAR_DIR"] = str(var)
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def seed(n: int):
    from django.utils import timezone

    from dashboard.events.models import ConnectionEvent
    from dashboard.fleet.models import Container, Node

    node = Node.objects.create(name="bench", token_hash="b" * 64)
    path = "/system.slice/docker-" + "c" * 64 + ".scope"
    container = Container.objects.create(
        node=node, runtime="docker", container_id="c" * 64, name="bench-app", cgroup_id=1, cgroup_path=path
    )
    start = timezone.now() - dt.timedelta(days=9)
    for first in range(0, n, 10_000):
        rows = []
        for i in range(first, min(n, first + 10_000)):
            ts = start + dt.timedelta(seconds=i * 86_400 / n)
            rows.append(ConnectionEvent(
                node=node, seq=i + 1, ts=ts, minute=int(ts.timestamp()) // 60, container=container, cgroup_id=1,
                cgroup_path=path, pid=1, tid=1, uid=0, gid=0, comm="app", family=4,
                dest_ip=f"127.0.{i % 200}.{i % 250}", dest_port=443, verdict="allow", count=1,
            ))  # fmt: skip
        ConnectionEvent.objects.bulk_create(rows)
    return node


def ingest_for(node, seconds: float, batch: int, seq: list[int]) -> float:
    from dashboard.events.ingest import ingest_batch

    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        events = []
        for _ in range(batch):
            seq[0] += 1
            events.append({
                "seq": seq[0], "kind": "connect", "ts_ns": time.time_ns(), "pid": 7, "tid": 7, "uid": 0, "gid": 0,
                "cgroup_id": 1, "cgroup_path": "", "family": 4, "dest_ip": f"127.1.{seq[0] % 250}.{seq[0] % 200}",
                "dest_port": 443, "result": None, "comm": "app", "container": None, "verdict": "allow", "rule_id": "",
                "severity": "", "policy_version": 1,
            })  # fmt: skip
        done += ingest_batch(node, events).stored
    return done / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=300_000, help="rows past retention to seed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=100, help="events per ingest call")
    args = parser.parse_args(argv)
    var = Path(tempfile.mkdtemp(prefix="crossedge-bench-retention-"))
    setup(var)
    from dashboard.events.models import ConnectionEvent

    started = time.perf_counter()
    node = seed(args.old)
    print(f"seeded {args.old:,} old connections in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    seq = [args.old + 1]
    env = os.environ | {"CROSSEDGE_VAR_DIR": str(var)}
    without, with_pruning, pruned = [], [], 0
    for _ in range(args.rounds):  # the arms interleaved
        without.append(ingest_for(node, args.seconds, args.batch, seq))
        before = ConnectionEvent.objects.filter(ts__lt=node.created_at - dt.timedelta(days=7)).count()
        pruner = subprocess.Popen([sys.executable, "manage.py", "prune", "--every", "0.1", "--quiet"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(1)  # it has started deleting
            with_pruning.append(ingest_for(node, args.seconds, args.batch, seq))
        finally:
            pruner.terminate()
            pruner.wait(timeout=30)
        after = ConnectionEvent.objects.filter(ts__lt=node.created_at - dt.timedelta(days=7)).count()
        pruned += before - after
        if not after:
            print("warning: the old rows ran out during the run: seed more with --old", file=sys.stderr)
    without.append(ingest_for(node, args.seconds, args.batch, seq))
    ratio = statistics.median(with_pruning) / statistics.median(without)
    print(f"ingest events/s without pruning: {' '.join(f'{x:,.0f}' for x in without)}")
    print(f"ingest events/s while pruning:   {' '.join(f'{x:,.0f}' for x in with_pruning)}")
    print(f"pruned while ingest ran: {pruned:,} rows")
    print(f"ingest while pruning / without ({args.rounds} interleaved rounds, medians): {ratio:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    alone()
    sys.exit(main())
