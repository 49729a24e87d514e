from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from dashboard.fleet.models import Node

from .models import PolicyState, Rule


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
