"""The traffic page, its exports and the billing API: sums of the per-minute rows over a
window, per container (or per flow), with the busiest remote ends and an hourly chart."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.db.models import F, Sum
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from dashboard.api.views import BadQuery, api_auth
from dashboard.export import check_format, download

from .models import COUNTERS, TrafficMinute

PERIODS = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1), "week": dt.timedelta(days=7),
           "30d": dt.timedelta(days=30)}  # fmt: skip
GROUPS = {
    "container": ("container__name", "node__name", "cgroup_path"),
    "flow": ("container__name", "node__name", "cgroup_path", "proto", "local_port", "remote_ip", "remote_port"),
}
SUMS = {name: Sum(name) for name in COUNTERS}


def window(params) -> tuple[dt.datetime, dt.datetime, str]:
    """(since, until, period) from `since`/`until` (ISO 8601) or `period` (default a day)."""
    period = params.get("period") or "day"
    if period not in PERIODS:
        raise BadQuery(f"period must be one of {', '.join(PERIODS)}")
    until = _time(params, "until") or timezone.now()
    since = _time(params, "since") or until - PERIODS[period]
    if since >= until:
        raise BadQuery("since must be before until")
    return since, until, period


def _time(params, name):
    raw = params.get(name)
    if not raw:
        return None
    value = parse_datetime(raw)
    if value is None:
        raise BadQuery(f"{name} must be an ISO 8601 time, e.g. 2026-11-22T10:00:00Z")
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def usage(params) -> tuple[list[dict], dt.datetime, dt.datetime, str]:
    """Summed rows for the window, busiest first (bytes both ways)."""
    since, until, period = window(params)
    group = params.get("group") or "container"
    if group not in GROUPS:
        raise BadQuery(f"group must be one of {', '.join(GROUPS)}")
    qs = TrafficMinute.objects.filter(minute__gte=_minute(since), minute__lt=_minute(until))
    if container := params.get("container"):
        qs = qs.filter(container__name=container)
    if node := params.get("node"):
        qs = qs.filter(node__name=node)
    rows = qs.values(*GROUPS[group]).annotate(**SUMS).annotate(total=F("bytes_in") + F("bytes_out"))
    out = []
    for row in rows.order_by("-total"):
        row.pop("total")
        row["container"] = row.pop("container__name") or "host"
        row["node"] = row.pop("node__name")
        out.append(row)
    return out, since, until, period


def _minute(when: dt.datetime) -> int:
    """The first whole minute that starts at or after `when`: a window holds the minutes
    that start within it (the current one too, as far as it has been counted)."""
    return -(-int(when.timestamp() * 1e6) // 60_000_000)


def hourly(since: dt.datetime, until: dt.datetime, container: str = "") -> list[dict]:
    """Bytes per hour (in and out) over the window, for the chart."""
    qs = TrafficMinute.objects.filter(minute__gte=_minute(since), minute__lt=_minute(until))
    if container:
        qs = qs.filter(container__name=container)
    by_hour = {}
    for row in qs.values("minute").annotate(i=Sum("bytes_in"), o=Sum("bytes_out")):
        hour = row["minute"] // 60
        i, o = by_hour.get(hour, (0, 0))
        by_hour[hour] = (i + row["i"], o + row["o"])
    first, last = _minute(since) // 60, max(_minute(until) - 1, _minute(since)) // 60
    peak = max([i + o for i, o in by_hour.values()] or [1]) or 1
    bars = []
    for n, hour in enumerate(range(first, last + 1)):
        i, o = by_hour.get(hour, (0, 0))
        start = dt.datetime.fromtimestamp(hour * 3600, tz=dt.UTC)
        h_in, h_out = round(100 * i / peak), round(100 * o / peak)
        bars.append({"x": n * 12, "h_in": h_in, "h_out": h_out, "y_in": 100 - h_in, "y_out": 100 - h_out, "in": i,
                     "out": o, "label": start.strftime("%d %H:00")})  # fmt: skip
    return bars


@login_required
def page(request):
    try:
        totals, since, until, period = usage(request.GET)
        by_flow = request.GET.copy()
        by_flow["group"] = "flow"
        flows, *_ = usage(by_flow)
    except BadQuery as exc:
        return render(request, "traffic/traffic.html", {"error": str(exc), "periods": PERIODS}, status=400)
    context = {
        "totals": totals,
        "flows": flows[:15],
        "since": since,
        "until": until,
        "period": period,
        "periods": PERIODS,
        "container": request.GET.get("container", ""),
        "chart": hourly(since, until, request.GET.get("container", "")),
        "query": request.GET.urlencode(),
    }
    context["chart_width"] = 12 * len(context["chart"])
    return render(request, "traffic/traffic.html", context)


@login_required
def export(request, fmt):
    check_format(fmt)
    try:
        rows, since, until, _period = usage(request.GET)
    except BadQuery as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    stamp = {"since": since.isoformat(), "until": until.isoformat()}
    return download((stamp | row for row in rows), fmt, "traffic")


@require_GET
@api_auth
def api(request):
    """Billing: bytes, payload and packets each way per container (or `group=flow`) over a window."""
    rows, since, until, _period = usage(request.GET)
    return JsonResponse({"since": since.isoformat(), "until": until.isoformat(), "results": rows})
