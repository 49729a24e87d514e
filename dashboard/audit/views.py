"""The audit trail page: filtered, paged by id (newest first), exported as CSV or NDJSON
(an export of the trail is itself recorded). Needs audit.view_auditentry (superusers)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.db.models import Q
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dashboard.export import check_format, download

from .models import ACTIONS, AuditEntry
from .trail import record

PAGE = 100
EXPORT_CAP = 1_000_000
LABELS = dict(ACTIONS)


class FilterError(ValueError):
    pass


def _filtered(params):
    """(the filter's values, the entries it selects); FilterError says what is wrong."""
    values = {name: params.get(name, "").strip() for name in ("actor", "action", "q", "since", "until")}
    if values["action"] and values["action"] not in LABELS:
        raise FilterError(f"unknown action {values['action']!r}")
    if any(len(v) > 300 for v in values.values()):
        raise FilterError("a filter is too long")
    qs = AuditEntry.objects.all()
    if values["actor"]:
        qs = qs.filter(actor__icontains=values["actor"])
    if values["action"]:
        qs = qs.filter(action=values["action"])
    if values["q"]:
        qs = qs.filter(Q(target__icontains=values["q"]) | Q(address__startswith=values["q"]))
    for name, lookup in (("since", "ts__gte"), ("until", "ts__lt")):
        if values[name]:
            when = parse_datetime(values[name])
            if when is None:
                raise FilterError(f"{name} must be an ISO 8601 time, e.g. 2026-11-22T10:00:00Z")
            if timezone.is_naive(when):
                when = timezone.make_aware(when, timezone.utc)
            qs = qs.filter(**{lookup: when})
    return values, qs.order_by("-id")


def _row(entry: AuditEntry) -> dict:
    return {
        "id": entry.pk,
        "ts": entry.ts.isoformat(),
        "actor": entry.actor,
        "address": entry.address or "",
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    }


@login_required
@permission_required("audit.view_auditentry", raise_exception=True)
def trail(request):
    context = {"actions": ACTIONS, "rows": [], "error": "", "values": {}, "audit_days": settings.AUDIT_DAYS}
    try:
        values, qs = _filtered(request.GET)
        before = request.GET.get("before", "")
        if before:
            if not before.isdigit():
                raise FilterError("bad page cursor")
            qs = qs.filter(id__lt=int(before))
    except FilterError as exc:
        return render(request, "audit/trail.html", context | {"error": str(exc)}, status=400)
    rows = list(qs[: PAGE + 1])
    query = request.GET.copy()
    query.pop("before", None)
    context |= {"rows": rows[:PAGE], "values": values, "export": query.urlencode()}
    if len(rows) > PAGE:
        query["before"] = rows[PAGE - 1].pk
        context["next"] = query.urlencode()
    return render(request, "audit/trail.html", context)


@login_required
@permission_required("audit.view_auditentry", raise_exception=True)
def export(request, fmt):
    check_format(fmt)
    try:
        values, qs = _filtered(request.GET)
    except FilterError as exc:
        return render(request, "audit/trail.html", {"actions": ACTIONS, "error": str(exc), "values": {}}, status=400)
    record("audit_exported", "audit trail", format=fmt, filter={k: v for k, v in values.items() if v})
    rows = (_row(e) for e in qs[:EXPORT_CAP].iterator(chunk_size=2000))
    if fmt == "csv":
        rows = ({**r, "detail": str(r["detail"]) if r["detail"] else ""} for r in rows)
    return download(rows, fmt, "audit")
