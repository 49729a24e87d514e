"""`/metrics` for operators, in Prometheus text format (prometheus-client).

Everything comes from what agents report in their heartbeats and from per-node columns the
dashboard keeps anyway: a scrape never counts event rows. Access: a bearer token
(CROSSEDGE_METRICS_TOKEN) or a client address in CROSSEDGE_METRICS_ALLOW (CIDRs; default
loopback only).
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dashboard.alerts.metrics import AlertCollector
from dashboard.audit.actor import client_address
from dashboard.events.retention import database_bytes, used_bytes

from .models import Node, as_count


class FleetCollector:
    def collect(self):
        up = GaugeMetricFamily("crossedge_node_up", "1 while the node's heartbeats arrive", labels=["node"])
        age = GaugeMetricFamily("crossedge_node_last_seen_seconds", "Seconds since the last message", labels=["node"])
        stored = GaugeMetricFamily("crossedge_node_last_stored_seq", "Highest event number stored", labels=["node"])
        seen = CounterMetricFamily("crossedge_agent_events", "Events judged by the agent", labels=["node", "verdict"])
        lost = CounterMetricFamily("crossedge_events_lost", "Events lost, by stage", labels=["node", "stage"])
        restarts = CounterMetricFamily("crossedge_backend_restarts", "Backend restarts", labels=["node", "backend"])
        decisions = CounterMetricFamily(
            "crossedge_kernel_decisions", "Kernel enforcement decisions by rule", labels=["node", "rule"]
        )
        spool = GaugeMetricFamily("crossedge_spool_depth", "Events waiting in the agent's spool", labels=["node"])
        policy = GaugeMetricFamily("crossedge_policy_version", "Policy version held", labels=["node", "where"])
        rejected = CounterMetricFamily("crossedge_rejected_messages", "Agent messages rejected", labels=["node"])
        unenforced = CounterMetricFamily(
            "crossedge_deny_not_enforced",
            "Deny verdicts the kernel did not apply (the call went through)",
            labels=["node"],
        )
        holds = CounterMetricFamily(
            "crossedge_container_holds",
            "New containers' first execs held until the agent listed them",
            labels=["node", "outcome"],
        )
        now = timezone.now()
        for node in Node.objects.all():
            name, health = node.name, node.health if isinstance(node.health, dict) else {}
            up.add_metric([name], 1 if node.status(now) == "online" else 0)
            if node.last_seen_at:
                age.add_metric([name], (now - node.last_seen_at).total_seconds())
            stored.add_metric([name], node.last_seq)
            verdicts = health.get("verdicts") if isinstance(health.get("verdicts"), dict) else {}
            for verdict in ("allow", "alert", "deny"):
                seen.add_metric([name, verdict], as_count(verdicts.get(verdict)))
            backends = health.get("backends") if isinstance(health.get("backends"), dict) else {}
            for stage, count in node.losses.items():
                lost.add_metric([name, stage], count)
            for backend, b in backends.items():
                if isinstance(b, dict):
                    restarts.add_metric([name, str(backend)], as_count(b.get("restarts")))
            for rule, count in node.enforcement.get("counters", {}).items():
                decisions.add_metric([name, rule], count)
            spool.add_metric([name], as_count(health.get("spool")))
            policy.add_metric([name, "agent"], node.policy_version)
            if node.enforcement.get("policy_version") is not None:
                policy.add_metric([name, "kernel"], node.enforcement["policy_version"])
            rejected.add_metric([name], node.rejected_messages)
            unenforced.add_metric([name], node.not_enforced["count"])
            for outcome in ("held", "released", "expired"):
                holds.add_metric([name, outcome], node.holds.get(outcome, 0))
        yield from (up, age, stored, seen, lost, restarts, decisions, spool, policy, rejected, unenforced, holds)
        size = database_bytes()
        if size is not None:
            yield GaugeMetricFamily("crossedge_database_bytes", "The dashboard database's size on disk", value=size)
        used, bound = used_bytes(counted=False), settings.RETENTION_MB * 2**20  # no table scans per scrape
        if used is not None:
            yield GaugeMetricFamily("crossedge_database_used_bytes", "What the data takes (bounded)", value=used)
        if bound:
            yield GaugeMetricFamily("crossedge_database_limit_bytes", "CROSSEDGE_RETENTION_MB in bytes", value=bound)


def allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
        return True
    try:
        client = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOW)


def metrics(request):
    if not allowed(request):
        return HttpResponseForbidden(
            "metrics: send 'Authorization: Bearer <CROSSEDGE_METRICS_TOKEN>' or scrape from "
            "an address in CROSSEDGE_METRICS_ALLOW\n"
        )
    registry = CollectorRegistry()
    registry.register(FleetCollector())
    registry.register(AlertCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
