import datetime as dt

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from dashboard.events.models import ConnectionEvent, ProcessEvent, Rollup, Violation
from dashboard.events.process_tree import process_tree
from dashboard.events.retention import database_bytes, used_bytes
from dashboard.policy.models import Rule
from dashboard.traffic.models import TrafficMinute
from dashboard.traffic.views import SUMS
from monitor import rules as engine
from monitor.features import FEATURES

from .models import Container, Node

TOOLS = ("bpftool", "bpftrace")


def feature_matrix(nodes) -> list[dict]:
    """One row per probed feature or tool, one cell per node (None: not reported)."""
    rows = []
    for tool in TOOLS:
        rows.append({"name": f"{tool} version", "cells": [n.features.get("tools", {}).get(tool) for n in nodes]})
    for name in FEATURES:
        rows.append(
            {"name": name.replace("_", " "), "cells": [n.features.get("features", {}).get(name) for n in nodes]}
        )
    return rows


@login_required
def nodes(request):
    nodes = list(Node.objects.all())
    return render(request, "fleet/nodes.html", {"nodes": nodes, "matrix": feature_matrix(nodes), "storage": storage()})


def storage() -> dict:
    """What the database holds and keeps, for the Nodes page."""
    oldest = ConnectionEvent.objects.order_by("ts").values_list("ts", flat=True).first()  # index lookups, not counts
    minute = Rollup.objects.order_by("minute").values_list("minute", flat=True).first()
    rolled = dt.datetime.fromtimestamp(minute * 60, tz=dt.UTC) if minute is not None else None
    return {"bytes": database_bytes(), "used": used_bytes(counted=False), "max_bytes": settings.RETENTION_MB * 2**20,
            "days": settings.RETENTION_DAYS, "rollup_days": settings.ROLLUP_DAYS, "oldest": oldest,
            "oldest_rollup": rolled}  # fmt: skip


@login_required
def container(request, pk):
    c = get_object_or_404(Container.objects.select_related("node"), pk=pk)
    applies = [r for r in Rule.objects.all() if engine_rule(r).matches_scope(c.cgroup_id, c.cgroup_path, c.name)]
    context = {
        "c": c,
        "connections": ConnectionEvent.objects.filter(container=c).select_related("node")[:25],
        "violations": Violation.objects.filter(container=c).select_related("node")[:25],
        "processes": ProcessEvent.objects.filter(container=c, kind__in=("exec", "exit")).select_related("node")[:25],
        "files": ProcessEvent.objects.filter(container=c, kind="open").select_related("node")[:25],
        "tree": process_tree(c),
        "exec_count": (c.node.health.get("exec_counts") or {}).get(c.cgroup_path),
        "rules": applies,
        "traffic": container_traffic(c),
    }
    return render(request, "fleet/container.html", context)


def container_traffic(c: Container) -> dict:
    """The container's bytes each way over the last 24 hours (traffic page's per-minute rows)."""
    since = (timezone.now() - dt.timedelta(days=1)).timestamp() // 60
    return TrafficMinute.objects.filter(container=c, minute__gte=since).aggregate(**SUMS)


def engine_rule(row):
    return engine.parse_rule(row.to_spec())


@login_required
def containers(request):
    return render(request, "fleet/containers.html", {"containers": Container.objects.select_related("node")[:500]})
