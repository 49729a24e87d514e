"""Rule pages: the list, one rule (hits over time, recent matches, history, promotion),
and the draft tester that replays a rule over the last 24 hours of stored connections."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard.charts import stacked_bars
from dashboard.events.filters import named
from dashboard.events.models import ConnectionEvent, ProcessEvent, Violation
from dashboard.events.periods import PERIODS, rule_hits
from dashboard.fleet.models import Node
from monitor import rules as engine

from .models import PolicyState, Rule, RuleChange
from .roles import can_edit_rules

DRAFT_WINDOW = timedelta(hours=24)
DRAFT_FIELDS = ("container", "cgroup_path", "cgroup_id", "dest_ip", "dest_fqdn", "dest_port", "binary", "parent",
                "path", "access")  # fmt: skip


def kernel_view(nodes) -> dict[str, dict]:
    """Per rule, across nodes: kernel decisions counted, and notes on what could not be enforced."""
    view: dict[str, dict] = {}

    def entry(rule_id):
        return view.setdefault(rule_id, {"count": 0, "notes": []})

    for node in nodes:
        k = node.enforcement
        for note in k.get("notes", []):
            entry(note["rule_id"])["notes"].append(f"{node.name}: {note['message']}")
        for rule_id, count in k.get("counters", {}).items():
            entry(rule_id)["count"] += count
    return view


@login_required
def rules(request):
    kernel = kernel_view(Node.objects.filter(revoked=False))
    rows = [(rule, kernel.get(rule.rule_id, {})) for rule in Rule.objects.all()]
    return render(request, "policy/rules.html", {"rows": rows, "version": PolicyState.current()})


@login_required
def rule(request, rule_id):
    row = Rule.objects.filter(rule_id=rule_id).first()
    history = list(RuleChange.objects.filter(rule_id=rule_id).select_related("user")[:50])
    if row is None and not history and not Violation.objects.filter(rule_id=rule_id).exists():
        raise Http404(f"no rule {rule_id}")  # (a check of the kernel's own, dns-forged, has violations only)
    now = timezone.now()
    period = request.GET.get("period", "24h")
    if period not in PERIODS:
        raise Http404(f"period must be one of {', '.join(PERIODS)}")
    would_deny = None
    if row and row.mode == "audit":
        audited = Violation.objects.filter(rule_id=rule_id, audit=True, ts__gte=row.created_at)
        would_deny = audited.aggregate(n=Coalesce(Sum("count"), 0))["n"]
    context = {
        "rule": row,
        "rule_id": rule_id,
        "chart": stacked_bars(rule_hits(rule_id, period, now), height=120),
        "period": period,
        "period_label": PERIODS[period][3],
        "periods": {name: spec[3] for name, spec in PERIODS.items()},
        "retention_days": settings.RETENTION_DAYS,
        "rollup_days": settings.ROLLUP_DAYS,
        "recent": Violation.objects.filter(rule_id=rule_id).select_related("node", "container").order_by("-ts")[:20],
        "history": history,
        "kernel": kernel_view(Node.objects.filter(revoked=False)).get(rule_id, {}),
        "would_deny": would_deny,
        "can_edit": can_edit_rules(request.user),
    }
    return render(request, "policy/rule.html", context)


@require_POST
@login_required
def promote(request, rule_id):
    """Audit -> enforce in one click (the kernel starts refusing within a second)."""
    if not can_edit_rules(request.user):
        raise PermissionDenied("only rule editors can promote rules")
    row = Rule.objects.filter(rule_id=rule_id, mode="audit").first()
    if row is None:
        messages.error(request, f"{rule_id} is not an audit-mode rule")
    else:
        row.mode = "enforce"  # recorded as the request's user (audit.actor.ActorMiddleware)
        row.save()
        messages.success(request, f"{rule_id} now enforces: matching connections are refused by the kernel.")
    return redirect("rule", rule_id=rule_id)


def replay(rule: engine.Rule, since) -> dict:
    """What `rule` would have matched among the events of its kind stored since `since`."""
    if rule.kind == "open":
        return replay_opens(rule, since)
    return replay_execs(rule, since) if rule.kind == "exec" else replay_connections(rule, since)


def replay_opens(rule: engine.Rule, since) -> dict:
    """Opens (of watched paths: only those are stored), grouped like execs."""
    qs = ProcessEvent.objects.filter(ts__gte=since, kind="open")
    if rule.container and not any(ch in rule.container for ch in "*?["):
        qs = qs.filter(container__name=rule.container)
    fields = ("container__name", "cgroup_path", "cgroup_id", "path", "access", "binary", "parent_binary", "parent_comm")
    total, by_container = 0, {}
    for g in qs.values(*fields).annotate(n=Sum("count")).order_by():
        op = engine.Open(g["path"], tuple(g["access"].split(",")), g["binary"], (g["parent_binary"], g["parent_comm"]),
                         g["cgroup_id"], g["cgroup_path"], g["container__name"])  # fmt: skip
        if rule.matches_open(op):
            total += g["n"]
            name = g["container__name"] or "host"
            by_container[name] = by_container.get(name, 0) + g["n"]
    return {"total": total, "containers": sorted(by_container.items(), key=lambda kv: -kv[1]), "what": "open"}


def replay_execs(rule: engine.Rule, since) -> dict:
    """Execs: grouped by what an exec rule looks at, then the engine on each group."""
    qs = ProcessEvent.objects.filter(ts__gte=since, kind="exec")
    if rule.container and not any(ch in rule.container for ch in "*?["):
        qs = qs.filter(container__name=rule.container)
    groups = qs.values("container__name", "cgroup_path", "cgroup_id", "binary", "parent_binary", "parent_comm")
    total, by_container = 0, {}
    for g in groups.annotate(n=Sum("count")).order_by():
        proc = engine.Exec(
            g["binary"], (g["parent_binary"], g["parent_comm"]), g["cgroup_id"], g["cgroup_path"], g["container__name"]
        )
        if rule.matches_exec(proc):
            total += g["n"]
            name = g["container__name"] or "host"
            by_container[name] = by_container.get(name, 0) + g["n"]
    return {"total": total, "containers": sorted(by_container.items(), key=lambda kv: -kv[1]), "what": "exec"}


def replay_connections(rule: engine.Rule, since) -> dict:
    """What `rule` would have matched among connections stored since `since`.

    One grouped query over the window (ts index, plus any exact port/address/container the
    rule names), then the engine itself on each distinct flow: exact, and the cost grows
    with distinct flows, not with events."""
    qs = ConnectionEvent.objects.filter(ts__gte=since)
    if rule.port_range:
        qs = qs.filter(dest_port__gte=rule.port_range[0], dest_port__lte=rule.port_range[1])
    if rule.dest_net is not None and rule.dest_net.num_addresses == 1:
        qs = qs.filter(dest_ip=str(rule.dest_net.network_address))
    if rule.container and not any(ch in rule.container for ch in "*?["):
        qs = qs.filter(container__name=rule.container)
    if rule.cgroup_id is not None:
        qs = qs.filter(cgroup_id=rule.cgroup_id)
    if rule.dest_fqdn is not None:
        qs = qs.filter(named(rule.dest_fqdn))
    columns = ("container__name", "cgroup_path", "cgroup_id", "dest_ip", "dest_port", "dest_name")
    flows = qs.values(*columns).annotate(n=Sum("count"))
    total, by_container = 0, {}
    for f in flows.order_by():
        flow = engine.Flow.of(
            f["dest_ip"], f["dest_port"], cgroup_id=f["cgroup_id"], cgroup_path=f["cgroup_path"],
            container=f["container__name"], dest_name=f["dest_name"],
        )  # fmt: skip
        if rule.matches(flow):
            total += f["n"]
            name = f["container__name"] or "host"
            by_container[name] = by_container.get(name, 0) + f["n"]
    return {"total": total, "containers": sorted(by_container.items(), key=lambda kv: -kv[1]), "what": "connection"}


@login_required
def draft(request):
    """Test a rule before saving it: how many stored connections (or execs, for a rule naming
    a binary or parent) of the last 24 h it matches."""
    values = {name: request.GET.get(name, "").strip() for name in DRAFT_FIELDS}
    result, error = None, ""
    if any(values.values()):
        match = {k: v for k, v in values.items() if v}
        if "cgroup_id" in match:
            match["cgroup_id"] = int(match["cgroup_id"]) if match["cgroup_id"].isdigit() else match["cgroup_id"]
        if "dest_port" in match and match["dest_port"].isdigit():
            match["dest_port"] = int(match["dest_port"])
        if "access" in match:
            match["access"] = [a.strip() for a in match["access"].split(",") if a.strip()]
        try:
            candidate = engine.parse_rule({"id": "draft", "match": match, "action": "deny"})
        except engine.RuleError as exc:
            error = f"{exc.field}: {exc.message}"
        else:
            result = replay(candidate, timezone.now() - DRAFT_WINDOW)
    return render(request, "policy/draft.html", {"values": values, "result": result, "error": error})
