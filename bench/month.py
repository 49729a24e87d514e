"""A simulated month of a busy node, written straight into the database: does the database
stay within its size bound, and do the pages stay under 300 ms at the end?

    .venv/bin/python -m bench.month [--days 30] [--rate 1] [--bound-mb 256] [--rounds 9] [--keep DIR]

Simulated hour by simulated hour, `rate` connections a second (3 nodes, 60 containers, 5 %
violations; each to a destination drawn from --destinations, so per-minute rollups fold
little: close to the pruner's worst case) are written into a fresh SQLite database (WAL, as
`make run` uses), after each simulated hour the pruner runs as `manage.py prune` would then (retention 7
days, rollups 400 days, the size bound --bound-mb, no rest between batches; `manage.py up`
runs it every 5 minutes, so a real node overshoots the bound by less).
Prints per day what was written, what the database holds and its size on disk and in use;
then render times (median and p90 of interleaved rounds, Django's test client) of the
overview, search and rule pages (24 h, 30 days, 52 weeks: the last two read rollups),
against the 300 ms budget.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from .alone import alone
from .dashboard_pages import BUDGET_MS, setup_django, world, write_events


def page_times(rounds: int) -> dict[str, list[float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    from dashboard.events.models import ConnectionEvent
    from dashboard.fleet.models import Container

    setup_test_environment()
    user = get_user_model().objects.create_superuser("bench", "", "pw-bench-123")
    client = Client()
    client.force_login(user)
    container = Container.objects.order_by("pk").first()
    dest_ip, dest_port = ConnectionEvent.objects.order_by("-id").values_list("dest_ip", "dest_port").first()
    pages = {
        "overview": "/",
        "search (default)": "/events/",
        "search container": f"/events/?container={container.name}",
        "search violations": "/events/?kind=violations&action=deny",
        "search dest+port": f"/events/?dest={dest_ip}&port={dest_port}",
        "rule page 24h": "/rules/rule-1/",
        "rule page 30d": "/rules/rule-1/?period=30d",
        "rule page 52w": "/rules/rule-1/?period=1y",
        "nodes (storage)": "/nodes/",
    }
    for url in pages.values():  # warm caches once
        assert client.get(url).status_code == 200, url
    times = {name: [] for name in pages}
    names = list(pages)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            assert client.get(pages[name]).status_code == 200
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rate", type=float, default=1.0, help="connections (rows) per simulated second")
    parser.add_argument("--destinations", type=int, default=50_000)
    parser.add_argument("--bound-mb", type=int, default=256, help="CROSSEDGE_RETENTION_MB")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--keep", metavar="DIR", help="write into this directory instead of a temporary one")
    args = parser.parse_args(argv)
    var_dir = args.keep or tempfile.mkdtemp(prefix="crossedge-bench-month-")
    setup_django(var_dir)
    from django.core.management import call_command

    from dashboard.events.models import ConnectionEvent, Rollup
    from dashboard.events.retention import database_bytes, prune, used_bytes

    call_command("migrate", verbosity=0)
    rng = random.Random(11)
    containers, dests = world(rng, args.destinations, ports=(80, 443, 3306))
    bound = args.bound_mb * 2**20
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    seq, written, worst = 1, 0, 0  # seq: the next one to write
    print(f"{'day':>4}{'written':>12}{'raw rows':>11}{'rollups':>10}{'on disk MiB':>13}{'in use MiB':>12}"
          f"{'write s':>9}{'prune s':>9}  size-pruned before")  # fmt: skip
    for day in range(args.days):
        spent, cut = [0.0, 0.0], ""
        for hour in range(24):
            at = start + timedelta(days=day, hours=hour)
            t0 = time.monotonic()
            times = [at + timedelta(seconds=i / args.rate) for i in range(int(args.rate * 3600))]
            seq = write_events(times, seq, containers, dests, rng)
            t1 = time.monotonic()
            done = prune(at + timedelta(hours=1), days=7, rollup_days=400, max_bytes=bound, duty=1)
            spent[0] += t1 - t0
            spent[1] += time.monotonic() - t1
            cut = f"{done.size_cutoff:%m-%d %H:%M}" if done.size_cutoff else cut
            worst = max(worst, database_bytes() or 0)
        written = seq - 1
        disk, used = database_bytes() or 0, used_bytes() or 0
        raw, rolled = ConnectionEvent.objects.count(), Rollup.objects.count()
        print(f"{day + 1:>4}{written:>12,}{raw:>11,}{rolled:>10,}{disk / 2**20:>13.0f}{used / 2**20:>12.0f}"
              f"{spent[0]:>9.0f}{spent[1]:>9.0f}  {cut}", flush=True)  # fmt: skip
    times = page_times(args.rounds)
    print(f"\npage render times after {args.days} simulated days ({args.rounds} interleaved rounds):")
    print(f"{'page':<20}{'median ms':>11}{'p90 ms':>9}{'/ 300 ms':>10}")
    slowest = 0.0
    for name, ts in times.items():
        ts = sorted(ts)
        med, p90 = statistics.median(ts), ts[int(0.9 * (len(ts) - 1))]
        slowest = max(slowest, med)
        print(f"{name:<20}{med:>11.1f}{p90:>9.1f}{med / BUDGET_MS:>10.2f}")
    print(f"\ndatabase: at most {worst / 2**20:.0f} MiB on disk with a {args.bound_mb} MiB bound; "
          f"slowest page median {slowest:.0f} ms (budget {BUDGET_MS:.0f} ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    alone()
    sys.exit(main())
