"""Pages for the overview, the live feeds and a process."""

import datetime as dt
from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from dashboard.charts import stacked_bars
from dashboard.fleet.models import Container, Node

from .feeds import FEEDS
from .filters import ACTIONS, EventFilter, FilterError
from .models import ConnectionEvent, ProcessEvent, Violation
from .process_tree import ancestry, life

FEED_COLUMNS = {
    "connections": ["time", "node", "container", "process", "destination", "result", "verdict", "rule"],
    "processes": ["time", "node", "container", "process", "event", "binary / exit / file", "parent", "verdict", "rule"],
    "violations": ["time", "node", "container", "process", "target", "rule", "action", "severity"],
}


def per_minute(since, minutes: int = 60) -> list[tuple[str, dict]]:
    """Connections per minute by verdict since `since`: one GROUP BY on the stored minute
    number over the ts index range (no per-row date functions)."""
    rows = ConnectionEvent.objects.filter(ts__gte=since).values("minute", "verdict").annotate(n=Sum("count")).order_by()
    counts: dict = {}
    for r in rows:
        counts.setdefault(r["minute"], {})[r["verdict"]] = r["n"]
    first = int(since.timestamp()) // 60
    buckets = []
    for m in range(first, first + minutes + 1):
        label = timezone.localtime(dt.datetime.fromtimestamp(m * 60, tz=dt.UTC)).strftime("%H:%M")
        buckets.append((label, counts.get(m, {})))
    return buckets


def top_containers(hour, limit: int = 8) -> list[dict]:
    rows = list(
        hour.exclude(container=None)
        .values("container_id")
        .annotate(n=Sum("count"), flagged=Coalesce(Sum("count", filter=~Q(verdict="allow")), 0))
        .order_by("-n")[:limit]
    )
    names = Container.objects.select_related("node").in_bulk([r["container_id"] for r in rows])
    for r in rows:
        c = names.get(r["container_id"])
        r["name"], r["node"] = (c.name, c.node.name) if c else ("?", "?")
    return rows


@login_required
def overview(request):
    now = timezone.now()
    since = now - timedelta(hours=1)
    hour = ConnectionEvent.objects.filter(ts__gte=since)
    buckets = per_minute(since)
    totals = {a: sum(c.get(a, 0) for _, c in buckets) for a in ACTIONS}
    context = {
        "nodes": Node.objects.all(),
        "connections_hour": sum(totals.values()),
        "alerts_hour": totals["alert"],
        "denies_hour": totals["deny"],
        "chart": stacked_bars(buckets),
        "top_containers": top_containers(hour),
        "top_destinations": hour.values("dest_ip", "dest_port", "dest_name")
        .annotate(n=Sum("count"), flagged=Coalesce(Sum("count", filter=~Q(verdict="allow")), 0))
        .order_by("-n")[:8],
        "latest": Violation.objects.select_related("node", "container").order_by("-ts")[:10],
    }
    return render(request, "events/overview.html", context)


FEED_KINDS = {
    "processes": ("exec", "exit", "open", "call", "socket"),
    "violations": ("connect", "exec", "open", "call", "scan", "flood", "limit", "dns", "socket"),
}


@login_required
def feed(request, feed):
    if feed not in FEEDS:
        raise Http404
    error = ""
    try:
        flt = EventFilter.parse(request.GET)
    except FilterError as exc:
        flt, error = EventFilter(), str(exc)
    context = {
        "feed": feed,
        "columns": FEED_COLUMNS[feed],
        "filter": flt,
        "error": error,
        "actions": ACTIONS,
        "feed_kinds": FEED_KINDS.get(feed, ()),
        "node_names": Node.objects.values_list("name", flat=True),
        "container_names": Container.objects.order_by().values_list("name", flat=True).distinct()[:500],
    }
    return render(request, "events/feed.html", context)


@login_required
def process(request, pk):
    """One process: what it ran, who started it (as far up as the records go), what it
    started, how it ended, its violations and its connections while it lived."""
    record = get_object_or_404(ProcessEvent.objects.select_related("node", "container"), pk=pk)
    execs, ended = life(record)
    first = execs[0] if execs else record
    children = ProcessEvent.objects.filter(
        node_id=record.node_id, cgroup_path=record.cgroup_path, kind="exec", ppid=record.pid,
        start_ns__gte=record.start_ns,
    ).order_by("ts")[:100]  # fmt: skip
    until = ended.ts if ended else timezone.now()
    files = ProcessEvent.objects.filter(
        node_id=record.node_id, cgroup_id=record.cgroup_id, kind="open", pid=record.pid, start_ns=record.start_ns
    ).order_by("ts")[:100]
    connections = ConnectionEvent.objects.filter(
        node_id=record.node_id, pid=record.pid, cgroup_id=record.cgroup_id, ts__gte=first.ts, ts__lte=until
    ).order_by("ts")[:100]
    context = {
        "p": first,
        "execs": execs,
        "ended": ended,
        "ancestry": ancestry(first),
        "children": children,
        "violations": Violation.objects.filter(process__in=[e.pk for e in [*execs, *files]]).order_by("ts"),
        "files": files,
        "connections": connections,
    }
    return render(request, "events/process.html", context)
