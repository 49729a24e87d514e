"""The JSON API for scripts: newest first, filtered, paged by an id cursor.

A cursor (`?before=<id>`) rather than page numbers: it stays fast on millions of rows
(no COUNT, no OFFSET) and does not skip or repeat rows while new ones arrive.
"""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from dashboard.events.filters import EventFilter, FilterError
from dashboard.events.models import ConnectionEvent, ProcessEvent, Violation
from dashboard.events.serializers import connection_row, process_row, violation_row
from dashboard.fleet.models import Node

from .models import ApiToken

MAX_LIMIT = 1000


class BadQuery(ValueError):
    pass


def api_auth(view):
    """Session or `Authorization: Token <key>`; JSON 401 otherwise (no login redirect)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        header = request.headers.get("Authorization", "")
        if header.startswith("Token "):
            user = ApiToken.user_for(header[6:].strip())
            if user is None:
                return JsonResponse({"error": "invalid API token"}, status=401)
            request.user = user
        elif not request.user.is_authenticated:
            return JsonResponse(
                {"error": "authentication required (session or 'Authorization: Token <key>')"}, status=401
            )
        try:
            return view(request, *args, **kwargs)
        except BadQuery as exc:
            return JsonResponse({"error": str(exc)}, status=400)

    return wrapper


def _int(request, name, default=None, lo=1, hi=None):
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number") from None
    if value < lo or (hi is not None and value > hi):
        raise BadQuery(f"{name} must be between {lo} and {hi}")
    return value


def _filtered(request, qs, action_field: str):
    try:
        qs = EventFilter.parse(request.GET).apply(qs, action_field)
    except FilterError as exc:
        raise BadQuery(str(exc)) from None
    before = _int(request, "before")
    if before:
        qs = qs.filter(pk__lt=before)
    return qs


def _page(request, qs, serialize):
    limit = _int(request, "limit", settings.API_PAGE_SIZE, 1, MAX_LIMIT)
    rows = list(qs.select_related("node", "container").order_by("-pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more:
        query = request.GET.copy()
        query["before"] = rows[-1].pk
        nxt = f"{request.path}?{query.urlencode()}"
    return JsonResponse({"results": [serialize(r) for r in rows], "next": nxt})


@require_GET
@api_auth
def connections(request):
    return _page(request, _filtered(request, ConnectionEvent.objects.all(), "verdict"), connection_row)


@require_GET
@api_auth
def processes(request):
    return _page(request, _filtered(request, ProcessEvent.objects.all(), "verdict"), process_row)


@require_GET
@api_auth
def violations(request):
    return _page(request, _filtered(request, Violation.objects.all(), "action"), violation_row)


@require_GET
@api_auth
def nodes(request):
    """Every node with its liveness, applied policy and protocol figures (for fleet scripts)."""
    rows = [
        {
            "name": n.name,
            "status": n.status(),
            "last_seen": n.last_seen_at.isoformat() if n.last_seen_at else None,
            "hostname": n.hostname,
            "kernel": n.kernel,
            "agent_version": n.agent_version,
            "policy_version": n.policy_version,
            "policy_error": n.policy_error,
            "kernel_policy_version": n.enforcement.get("policy_version"),
            "last_seq": n.last_seq,
            "rejected_messages": n.rejected_messages,
            "lost": n.losses,
        }
        for n in Node.objects.all()
    ]
    return JsonResponse({"results": rows})
