"""Pages for the overview and the live feeds."""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone

from dashboard.fleet.models import Container, Node

from .feeds import FEEDS
from .filters import ACTIONS, EventFilter, FilterError
from .models import ConnectionEvent, Violation

FEED_COLUMNS = {
    "connections": ["time", "node", "container", "process", "destination", "result", "verdict", "rule"],
    "violations": ["time", "node", "container", "process", "destination", "rule", "action", "severity"],
}


@login_required
def overview(request):
    since = timezone.now() - timedelta(hours=1)
    by_action = dict(Violation.objects.filter(ts__gte=since).values_list("action").annotate(n=Count("id")).order_by())
    context = {
        "nodes": Node.objects.all(),
        "connections_hour": ConnectionEvent.objects.filter(ts__gte=since).count(),
        "alerts_hour": by_action.get("alert", 0),
        "denies_hour": by_action.get("deny", 0),
        "latest": Violation.objects.select_related("node", "container")[:10],
    }
    return render(request, "events/overview.html", context)


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
        "node_names": Node.objects.values_list("name", flat=True),
        "container_names": Container.objects.order_by().values_list("name", flat=True).distinct()[:500],
    }
    return render(request, "events/feed.html", context)
