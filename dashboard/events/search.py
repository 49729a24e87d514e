"""Event search (paged by a (ts, id) cursor, so every page is an index range scan, never an
OFFSET), its CSV and NDJSON export (streamed), and violations grouped by rule, container
and destination."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Max, Min, Q, Sum
from django.shortcuts import render
from django.utils.dateparse import parse_datetime

from dashboard.audit.trail import record
from dashboard.export import check_format, download

from .filters import ACTIONS, EventFilter, FilterError
from .filters import KINDS as EVENTS
from .models import Violation
from .serializers import sources

KINDS = sources()
PAGE = 100
EXPORT_CAP = 1_000_000
GROUPS = 50


def _cursor(raw: str):
    ts, _, pk = raw.rpartition("|")
    when = parse_datetime(ts) if ts else None
    if when is None or not pk.isdigit():
        raise FilterError("bad page cursor")
    return when, int(pk)


def _query(request):
    kind = request.GET.get("kind", "connections")
    if kind not in KINDS:
        raise FilterError(f"kind must be one of {', '.join(KINDS)}")
    model, serialize, action_field = KINDS[kind]
    flt = EventFilter.parse(request.GET)
    qs = flt.apply(model.objects.select_related("node", "container"), action_field).order_by("-ts", "-id")
    return kind, flt, qs, serialize


@login_required
def search(request):
    context = {"actions": ACTIONS, "kinds": list(KINDS), "events": EVENTS, "rows": [], "error": "",
               "retention_days": settings.RETENTION_DAYS}  # fmt: skip
    try:
        kind, flt, qs, serialize = _query(request)
        if request.GET.get("before"):
            ts, pk = _cursor(request.GET["before"])
            qs = qs.filter(Q(ts__lt=ts) | Q(ts=ts, id__lt=pk))
        rows = list(qs[: PAGE + 1])
    except FilterError as exc:
        return render(request, "events/search.html", context | {"error": str(exc), "filter": EventFilter()}, status=400)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    nxt = None
    if more:
        query = request.GET.copy()
        query["before"] = f"{rows[-1].ts.isoformat()}|{rows[-1].pk}"
        nxt = query.urlencode()
    export = request.GET.copy()
    export.pop("before", None)
    context |= {
        "kind": kind,
        "filter": flt,
        "rows": [{"verdict": getattr(r, "action", None)} | serialize(r) for r in rows],
        "next": nxt,
        "export": export.urlencode(),
    }
    return render(request, "events/search.html", context)


def _flat(row: dict) -> dict:
    container = row.get("container") or {}
    return {k: v for k, v in row.items() if k != "container"} | {"container": container.get("name", "")}


@login_required
def export(request, fmt):
    check_format(fmt)
    try:
        kind, flt, qs, serialize = _query(request)
    except FilterError as exc:
        return render(request, "events/search.html", {"error": str(exc), "filter": EventFilter()}, status=400)
    rows = (_flat(serialize(r)) for r in qs[:EXPORT_CAP].iterator(chunk_size=2000))
    record("events_exported", kind, format=fmt, filter=request.GET.dict())
    return download(rows, fmt, kind)


@login_required
def grouped(request):
    """Repeats of one rule by one container to one destination, as one row with a count."""
    try:
        flt = EventFilter.parse(request.GET)
    except FilterError as exc:
        return render(request, "events/grouped.html", {"error": str(exc), "groups": []}, status=400)
    qs = flt.apply(Violation.objects.all(), "action")
    groups = list(
        qs.values("rule_id", "action", "container_id", "container__name", "node__name", "dest_ip", "dest_port")
        .annotate(n=Sum("count"), first=Min("ts"), last=Max("ts"))
        .order_by("-last")[:GROUPS]
    )
    samples = {}
    if groups:
        recent = qs.filter(rule_id__in={g["rule_id"] for g in groups}).select_related("node").order_by("-ts")[:2000]
        for v in recent:
            key = (v.rule_id, v.container_id, v.dest_ip, v.dest_port)
            samples.setdefault(key, [])
            if len(samples[key]) < 5:
                samples[key].append(v)
    for g in groups:
        g["samples"] = samples.get((g["rule_id"], g["container_id"], g["dest_ip"], g["dest_port"]), [])
    return render(request, "events/grouped.html", {"groups": groups, "filter": flt, "actions": ACTIONS})
