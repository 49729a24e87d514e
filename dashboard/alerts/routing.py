"""Which outputs a violation goes to, and under which dedupe key.

An alert is a violation row as the API shows it (serializers.violation_row), plus its
rule's tags and description: the same fields a route selects on and a message shows.
"""

from __future__ import annotations

from dashboard.events.serializers import violation_row
from monitor import rules as engine
from monitor.rules import glob_match

from .models import Output, split

RANK = {name: rank for rank, name in enumerate(engine.SEVERITIES)}


def alert_of(violation, rule: dict | None) -> dict:
    """The violation as outputs see it; `rule` is {"tags": [...], "description": ...} or None
    (a rule deleted since)."""
    row = violation_row(violation)
    row["container_name"] = (row["container"] or {}).get("name", "")
    row["tags"] = list((rule or {}).get("tags") or [])
    row["description"] = (rule or {}).get("description", "")
    row["severity"] = row["severity"] or engine.DEFAULT_SEVERITY
    return row


def selects(output: Output, alert: dict) -> bool:
    """Every route field set on the output must match; a blank one matches anything."""
    if RANK.get(alert["severity"], 0) < RANK.get(output.min_severity, 0):
        return False
    if alert["action"] not in split(output.actions):
        return False
    if (rules := split(output.rules)) and not any(glob_match(alert["rule_id"], r) for r in rules):
        return False
    if (tags := split(output.tags)) and not set(tags) & set(alert["tags"]):
        return False
    if (nodes := split(output.nodes)) and not any(glob_match(alert["node"], n) for n in nodes):
        return False
    containers = split(output.containers)
    return not containers or any(glob_match(alert["container_name"], c) for c in containers)


def dedupe_key(alert: dict) -> str:
    """One rule, one node, one container (or cgroup), one verdict: a storm of it is one
    notification per window, whatever destinations or files it touched."""
    who = alert["container_name"] or f"pid {alert['pid']} ({alert['comm']})"
    return f"{alert['rule_id']}|{alert['node']}|{who}|{alert['action']}"[:400]
