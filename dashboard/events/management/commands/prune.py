"""`manage.py prune`: roll up and delete events past their retention (once, or every N s)."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.events.retention import database_bytes, prune, used_bytes


class Command(BaseCommand):
    help = (
        "Sum events older than CROSSEDGE_RETENTION_DAYS into per-minute rollups and delete them (with their "
        "violations), a batch at a time; delete rollups older than CROSSEDGE_ROLLUP_DAYS; then keep the data within "
        "CROSSEDGE_RETENTION_MB, oldest first."
    )

    def add_arguments(self, parser):
        days, rollup_days = settings.RETENTION_DAYS, settings.ROLLUP_DAYS
        parser.add_argument("--days", type=int, default=days, help=f"keep raw events this many days; 0: all ({days})")
        parser.add_argument(
            "--rollup-days", type=int, default=rollup_days, help=f"keep rollups this many days; 0: all ({rollup_days})"
        )
        parser.add_argument(
            "--max-mb",
            type=int,
            default=settings.RETENTION_MB,
            help=f"then, while the data takes more, remove the oldest events, then rollups; 0: no bound "
            f"({settings.RETENTION_MB})",
        )
        parser.add_argument(
            "--every", type=float, default=0, metavar="SECONDS", help="run again every SECONDS (`up` runs it every 300)"
        )
        parser.add_argument("--quiet", action="store_true", help="say nothing when nothing was pruned")

    def handle(self, *args, **opts):
        if min(opts["days"], opts["rollup_days"], opts["every"], opts["max_mb"]) < 0:
            raise CommandError("--days, --rollup-days, --max-mb and --every must not be negative")
        while True:
            self.run_once(opts)
            if not opts["every"]:
                return
            time.sleep(opts["every"])

    def run_once(self, opts):
        def progress(table, deleted):
            if not opts["quiet"]:
                self.stdout.write(f"  {table}: {deleted} deleted so far")

        done = prune(days=opts["days"], rollup_days=opts["rollup_days"], max_bytes=opts["max_mb"] * 2**20,
                     progress=progress)  # fmt: skip
        total = sum(done.events.values())
        if total or done.rollups or done.traffic or done.audit or not opts["quiet"]:
            tables = ", ".join(f"{t}: {n}" for t, n in done.events.items()) or "retention off"
            bound = (f" (and, for the {opts['max_mb']} MiB bound, older than {done.size_cutoff:%Y-%m-%d %H:%M})"
                     if done.size_cutoff else "")  # fmt: skip
            size = database_bytes()
            self.stdout.write(
                f"pruned {total} event(s) older than {opts['days']} days{bound} ({tables}) "
                f"into {done.rolled_up} rollup "
                f"row(s); {done.rollups} rollup row(s) past {opts['rollup_days']} days deleted"
                + (f", {done.traffic} traffic minute(s)" if done.traffic else "")
                + (f" ({done.rollups_by_size} of them for the size bound)" if done.rollups_by_size else "")
                + (f"; {done.audit} audit entries past {settings.AUDIT_DAYS} days deleted" if done.audit else "")
                + (f"; database {size / 2**20:.1f} MiB on disk" if size else "")
                + (f", {used / 2**20:.1f} MiB in use" if (used := used_bytes()) is not None else "")
            )
